//! `Store`: opening a directory and managing its topics.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyString};
use tidelog_core::producer::identity::Identity;
use tidelog_core::settings::{self, Kind, TopicSettings, Value};
use tidelog_core::{defaults, FsyncPolicy, LogConfig, OnCorruption, Store};

use crate::args;
use crate::errors::{to_py, InvalidConfigError, StoreClosedError};
use crate::gil::run_detached;
use crate::group::PyGroup;
use crate::statelog::PyStateLog;
use crate::topic::PyTopic;

/// An open store directory. Use `tidelog.open(...)`, which wraps this class.
#[pyclass(frozen, module = "tidelog._core", name = "Store")]
pub struct PyStore {
    inner: Arc<Store>,
}

fn positive(name: &str, value: i64) -> PyResult<usize> {
    usize::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| InvalidConfigError::new_err(format!("{name} must be a positive integer, got {value}")))
}

/// Converts `{name: value}` keyword settings, naming the setting in every error.
pub(crate) fn settings_arg(obj: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, Value)>> {
    let Some(dict) = obj else { return Ok(Vec::new()) };
    let mut out = Vec::with_capacity(dict.len());
    for (k, v) in dict.iter() {
        let key: String = k.extract().map_err(|_| PyTypeError::new_err("setting names must be str"))?;
        let kind = settings::kind(&key).ok_or_else(|| {
            InvalidConfigError::new_err(format!(
                "unknown setting {key:?}: the stored settings are {}",
                settings::KEYS.join(", ")
            ))
        })?;
        let type_name = v.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string());
        let value = match kind {
            Kind::OptionalInt if v.is_none() => Value::Unset,
            Kind::Int | Kind::OptionalInt if v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>() => {
                Value::Int(v.extract::<i64>().map_err(|_| {
                    InvalidConfigError::new_err(format!(
                        "{key} must be a positive integer below 2**63, got {v}"
                    ))
                })?)
            }
            Kind::Text if v.is_instance_of::<PyString>() => Value::Text(v.extract()?),
            Kind::Int => return Err(PyTypeError::new_err(format!("{key} must be int, got {type_name}"))),
            Kind::OptionalInt => {
                return Err(PyTypeError::new_err(format!("{key} must be int or None, got {type_name}")))
            }
            Kind::Text => return Err(PyTypeError::new_err(format!("{key} must be str, got {type_name}"))),
        };
        out.push((key, value));
    }
    Ok(out)
}

/// The settings as a `dict`.
pub(crate) fn settings_dict<'py>(py: Python<'py>, s: &TopicSettings) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for key in settings::KEYS {
        match s.get(key).map_err(crate::errors::CoreError)? {
            Value::Int(n) => d.set_item(key, n)?,
            Value::Text(t) => d.set_item(key, t)?,
            Value::Unset => d.set_item(key, py.None())?,
        }
    }
    Ok(d)
}

impl PyStore {
    /// The engine store.
    pub fn inner(&self) -> &Arc<Store> {
        &self.inner
    }

    /// `StoreClosedError` once the store is closed.
    pub fn check_open(&self) -> PyResult<()> {
        if self.inner.is_closed() {
            return Err(StoreClosedError::new_err("the store is closed"));
        }
        Ok(())
    }
}

#[pymethods]
impl PyStore {
    #[new]
    // The defaults are the core's (`tidelog_core::defaults`), the one place that holds them.
    #[pyo3(signature = (
        path, *, segment_ms=defaults::SEGMENT_MS, fsync=defaults::FSYNC,
        fsync_interval_ms=defaults::FSYNC_INTERVAL_MS, producer_expiry_ms=defaults::PRODUCER_EXPIRY_MS,
        settings=None, on_corruption=defaults::ON_CORRUPTION,
        cleaner_interval_ms=defaults::CLEANER_INTERVAL_MS,
        min_cleanable_dirty_ratio=defaults::MIN_CLEANABLE_DIRTY_RATIO,
        cleaner_bytes_per_second=defaults::CLEANER_BYTES_PER_SECOND,
    ))]
    #[allow(clippy::too_many_arguments)] // mirrors the keyword options of tidelog.open
    fn new(
        py: Python<'_>,
        path: PathBuf,
        segment_ms: Option<i64>,
        fsync: &str,
        fsync_interval_ms: i64,
        producer_expiry_ms: i64,
        settings: Option<&Bound<'_, PyDict>>,
        on_corruption: &str,
        cleaner_interval_ms: Option<i64>,
        min_cleanable_dirty_ratio: f64,
        cleaner_bytes_per_second: Option<i64>,
    ) -> PyResult<Self> {
        let on_corruption = to_py(OnCorruption::named(on_corruption))?;
        let fsync = to_py(FsyncPolicy::named(fsync, fsync_interval_ms))?;
        // The file-shaping fields are replaced by the store's stored settings on open.
        let config = LogConfig {
            segment_ms,
            producer_expiry_ms: positive("producer_expiry_ms", producer_expiry_ms)? as i64,
            fsync,
            on_corruption,
            cleaner: tidelog_core::log::CleanerConfig {
                interval_ms: cleaner_interval_ms
                    .map(|ms| positive("cleaner_interval_ms", ms))
                    .transpose()?
                    .map(|ms| ms as u64),
                min_dirty_ratio: min_cleanable_dirty_ratio,
                bytes_per_second: cleaner_bytes_per_second
                    .map(|b| positive("cleaner_bytes_per_second", b))
                    .transpose()?
                    .map(|b| b as u64),
            },
            ..LogConfig::default()
        };
        let requested = settings_arg(settings)?;
        let store = run_detached(py, || Store::open(&path, config, &requested))?;
        Ok(PyStore { inner: Arc::new(store) })
    }

    /// The store's directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.dir().to_owned()
    }

    /// The fsync policy: "never", "interval" or "always".
    #[getter]
    fn fsync(&self) -> &'static str {
        match self.inner.config().fsync {
            FsyncPolicy::Never => "never",
            FsyncPolicy::Interval(_) => "interval",
            FsyncPolicy::Always => "always",
        }
    }

    /// Largest message (value + key + headers) accepted, in bytes.
    #[getter]
    fn max_message_bytes(&self) -> usize {
        self.inner.config().max_message_bytes
    }

    /// Segment capacity in bytes.
    #[getter]
    fn segment_bytes(&self) -> usize {
        self.inner.config().segment_bytes
    }

    /// The store's stored settings: the defaults for new topics.
    #[getter]
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        settings_dict(py, self.inner.defaults())
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Creates a topic (see `tidelog.Store.create_topic`). `internal=True` creates one of
    /// the store's internal topics (names starting with `__`), which the public API refuses;
    /// they take the store's settings.
    #[pyo3(signature = (name, partitions=None, *, exist_ok=false, settings=None, internal=false))]
    fn create_topic(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        partitions: Option<&Bound<'_, PyAny>>,
        exist_ok: bool,
        settings: Option<&Bound<'_, PyDict>>,
        internal: bool,
    ) -> PyResult<PyTopic> {
        let name = args::text(name, "name")?.into_owned();
        let partitions = partitions.map_or(Ok(1), |p| args::int(p, "partitions"))?;
        let partitions = u32::try_from(partitions).map_err(|_| {
            InvalidConfigError::new_err(format!("partitions must be between 1 and 10000, got {partitions}"))
        })?;
        let settings = settings_arg(settings)?;
        let store = self.inner.clone();
        let name = name.to_owned();
        if internal && !settings.is_empty() {
            return Err(InvalidConfigError::new_err("internal topics take the store's settings"));
        }
        let topic = run_detached(py, move || {
            if internal {
                store.create_internal_topic(&name, partitions, exist_ok)
            } else {
                store.create_topic(&name, partitions, exist_ok, &settings)
            }
        })?;
        Ok(PyTopic::new(py, topic))
    }

    /// Changes a topic's stored settings for every process (see `tidelog.Store.alter_topic`);
    /// returns the new settings.
    fn alter_topic<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        settings: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let changes = settings_arg(Some(settings))?;
        let store = self.inner.clone();
        let name = name.to_owned();
        let altered = run_detached(py, move || store.alter_topic(&name, &changes))?;
        settings_dict(py, &altered)
    }

    /// Opens an existing topic.
    fn topic(&self, py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<PyTopic> {
        let name = args::text(name, "name")?.into_owned();
        let store = self.inner.clone();
        let name = name.to_owned();
        let topic = run_detached(py, move || store.topic(&name))?;
        Ok(PyTopic::new(py, topic))
    }

    /// Topic names, sorted.
    fn topics(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let store = self.inner.clone();
        run_detached(py, move || store.topics())
    }

    /// Opens (and so recovers) every topic now; a topic deleted meanwhile is skipped.
    fn open_every_topic(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.inner.clone();
        run_detached(py, move || store.open_every_topic())
    }

    /// Deletes a topic and its data and, in the same atomic operation, its consumer groups'
    /// and work queues' state. Returns the incarnation deleted.
    fn delete_topic(&self, py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<u64> {
        let name = args::text(name, "name")?.into_owned();
        let store = self.inner.clone();
        run_detached(py, move || store.delete_topic(&name))
    }

    /// Finishes the transactions of named producers no instance of which is alive (in any
    /// process): fenced and aborted (or committed, if the commit had been decided) as their
    /// next instance would. Returns the names it finished.
    fn abort_orphaned_transactions(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.check_open()?;
        let store = self.inner.clone();
        run_detached(py, move || {
            let mut done = Vec::new();
            for name in Identity::with_open_transactions(&store)? {
                if Identity::abort_if_orphaned(&store, &name)? {
                    done.push(name);
                }
            }
            Ok(done)
        })
    }

    /// The named producers: dicts with `name`, `producer_id`, `epoch`, `alive` (an
    /// instance is open in some process), `transaction` (None, "ongoing" or "commit") and
    /// `partitions` (the open transaction's `(topic, partition)` pairs) and `deadline_ms`
    /// (when the open transaction's time limit is up, wall clock, or None: no limit).
    fn named_producers<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let store = self.inner.clone();
        let named = run_detached(py, move || Identity::named(&store))?;
        named
            .into_iter()
            .map(|p| {
                let d = PyDict::new(py);
                d.set_item("name", p.name)?;
                d.set_item("producer_id", p.producer_id)?;
                d.set_item("epoch", p.epoch)?;
                d.set_item("alive", p.alive)?;
                let (state, partitions) = match p.transaction {
                    None => (None, Vec::new()),
                    Some((commit, parts)) => {
                        (Some(if commit { "commit" } else { "ongoing" }), parts.into_iter().collect())
                    }
                };
                d.set_item("transaction", state)?;
                d.set_item("deadline_ms", p.timeout.map(|t| t.deadline_ms()))?;
                d.set_item("partitions", partitions)?;
                Ok(d)
            })
            .collect()
    }

    /// Opens the state log `name` in `directory` with the store's fsync policy; with
    /// `"interval"` the store's background syncer syncs it.
    fn state_log(&self, py: Python<'_>, directory: PathBuf, name: String) -> PyResult<PyStateLog> {
        let store = self.inner.clone();
        let log = run_detached(py, move || store.state_log(&directory, &name))?;
        Ok(PyStateLog::new(log))
    }

    /// Opens the membership state of consumer group `group` on topic `topic` with the
    /// store's fsync policy; with `"interval"` the store's background syncer syncs it.
    fn group(&self, py: Python<'_>, topic: String, group: String) -> PyResult<PyGroup> {
        let store = self.inner.clone();
        let g = run_detached(py, move || store.group(&topic, &group))?;
        Ok(PyGroup::new(g))
    }

    /// Forces everything appended so far to disk.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        self.check_open()?;
        let store = self.inner.clone();
        run_detached(py, move || store.sync())
    }

    /// Closes the store; closing twice is harmless.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.inner.clone();
        run_detached(py, move || store.close())
    }
}
