//! `Store`: opening a directory and managing its topics.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tidelog_core::producer::identity::Identity;
use tidelog_core::{FsyncPolicy, LogConfig, OnCorruption, Store};

use crate::errors::InvalidConfigError;
use crate::gil::run_detached;
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

impl PyStore {
    /// The engine store.
    pub fn inner(&self) -> &Arc<Store> {
        &self.inner
    }
}

#[pymethods]
impl PyStore {
    #[new]
    #[pyo3(signature = (
        path, *, segment_bytes=67108864, segment_ms=Some(604800000), retention_bytes=None,
        retention_ms=None, fsync="never", fsync_interval_ms=1000, max_message_bytes=None,
        index_interval_bytes=4096, producer_expiry_ms=604800000, on_corruption="raise",
    ))]
    #[allow(clippy::too_many_arguments)] // mirrors the keyword options of tidelog.open
    fn new(
        py: Python<'_>,
        path: PathBuf,
        segment_bytes: i64,
        segment_ms: Option<i64>,
        retention_bytes: Option<i64>,
        retention_ms: Option<i64>,
        fsync: &str,
        fsync_interval_ms: i64,
        max_message_bytes: Option<i64>,
        index_interval_bytes: i64,
        producer_expiry_ms: i64,
        on_corruption: &str,
    ) -> PyResult<Self> {
        let on_corruption = match on_corruption {
            "raise" => OnCorruption::Raise,
            "quarantine" => OnCorruption::Quarantine,
            other => {
                return Err(InvalidConfigError::new_err(format!(
                    "on_corruption must be \"raise\" or \"quarantine\", got {other:?}"
                )))
            }
        };
        let fsync = match fsync {
            "never" => FsyncPolicy::Never,
            "always" => FsyncPolicy::Always,
            "interval" => FsyncPolicy::Interval(Duration::from_millis(positive(
                "fsync_interval_ms",
                fsync_interval_ms,
            )? as u64)),
            other => {
                return Err(InvalidConfigError::new_err(format!(
                    "fsync must be \"never\", \"interval\" or \"always\", got {other:?}"
                )))
            }
        };
        let config = LogConfig {
            segment_bytes: positive("segment_bytes", segment_bytes)?,
            segment_ms,
            retention_bytes: retention_bytes
                .map(|b| positive("retention_bytes", b).map(|b| b as u64))
                .transpose()?,
            retention_ms,
            index_interval_bytes: positive("index_interval_bytes", index_interval_bytes)?,
            producer_expiry_ms: positive("producer_expiry_ms", producer_expiry_ms)? as i64,
            fsync,
            // By default a message may be up to 1 MiB, or half a segment if segments are small.
            max_message_bytes: match max_message_bytes {
                Some(n) => positive("max_message_bytes", n)?,
                None => (1 << 20).min(segment_bytes.max(0) as usize / 2).max(1),
            },
            on_corruption,
        };
        let store = run_detached(py, || Store::open(&path, config))?;
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

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Creates a topic (see `tidelog.Store.create_topic`).
    #[pyo3(signature = (name, partitions=1, *, exist_ok=false))]
    fn create_topic(&self, py: Python<'_>, name: &str, partitions: i64, exist_ok: bool) -> PyResult<PyTopic> {
        let partitions = u32::try_from(partitions).map_err(|_| {
            InvalidConfigError::new_err(format!("partitions must be between 1 and 10000, got {partitions}"))
        })?;
        let store = self.inner.clone();
        let name = name.to_owned();
        let topic = run_detached(py, move || store.create_topic(&name, partitions, exist_ok))?;
        Ok(PyTopic::new(py, topic))
    }

    /// Opens an existing topic.
    fn topic(&self, py: Python<'_>, name: &str) -> PyResult<PyTopic> {
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

    /// Deletes a topic and its data.
    fn delete_topic(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let store = self.inner.clone();
        let name = name.to_owned();
        run_detached(py, move || store.delete_topic(&name))
    }

    /// Finishes the transactions of named producers no instance of which is alive (in any
    /// process): fenced and aborted (or committed, if the commit had been decided) as their
    /// next instance would. Returns the names it finished.
    fn abort_orphaned_transactions(&self, py: Python<'_>) -> PyResult<Vec<String>> {
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
    /// `partitions` (the open transaction's `(topic, partition)` pairs).
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
                d.set_item("partitions", partitions)?;
                Ok(d)
            })
            .collect()
    }

    /// Forces everything appended so far to disk.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.inner.clone();
        run_detached(py, move || store.sync())
    }

    /// Closes the store; closing twice is harmless.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.inner.clone();
        run_detached(py, move || store.close())
    }
}
