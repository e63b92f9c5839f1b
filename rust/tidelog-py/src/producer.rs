//! `Producer`: buffered, backpressured sends drained by a native writer thread.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tidelog_core::defaults;
use tidelog_core::format::Compression;
use tidelog_core::producer::identity::Identity;
use tidelog_core::producer::{OnFull, Producer, ProducerConfig, SendError};

use crate::args;
use crate::errors::{BackpressureError, CoreError, InvalidConfigError, StoreClosedError};
use crate::gil::run_detached;
use crate::store::PyStore;
use crate::topic::{encode_headers, expect_bytes};

/// A buffered producer. Create it with `Store.producer(...)`.
#[pyclass(frozen, weakref, module = "tidelog._core", name = "Producer")]
pub struct PyProducer {
    inner: Arc<Producer>,
    name: Option<String>,
}

/// The codec named by a `compression=` argument.
fn codec(obj: &Bound<'_, PyAny>) -> PyResult<Compression> {
    let name = args::text(obj, "compression")?;
    Compression::from_name(&name).ok_or_else(|| {
        InvalidConfigError::new_err(format!(
            "compression must be \"none\", \"lz4\" or \"zstd\", got {name:?}"
        ))
    })
}

/// A send's arguments as the engine takes them, converted the same way for every producer's
/// `send` (errors name the argument).
pub(crate) struct SendArgs<'a> {
    pub(crate) topic: Cow<'a, str>,
    /// None: a tombstone (compaction deletes the key).
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) headers: Vec<u8>,
    pub(crate) partition: Option<u32>,
    pub(crate) priority: i32,
}

impl<'a> SendArgs<'a> {
    /// Converts the arguments of a `send` (as PyO3 would pass them).
    pub(crate) fn convert(
        topic: &'a Bound<'_, PyAny>,
        value: &'a Bound<'_, PyAny>,
        key: Option<&'a Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        partition: Option<&Bound<'_, PyAny>>,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        Ok(SendArgs {
            topic: args::text(topic, "topic")?,
            value: if value.is_none() { None } else { Some(expect_bytes(value, "value")?.as_bytes()) },
            key: key
                .filter(|k| !k.is_none())
                .map(|k| expect_bytes(k, "key"))
                .transpose()?
                .map(|k| k.as_bytes()),
            headers: encode_headers(headers)?,
            partition: args::partition(partition)?,
            priority: args::opt_int_in(priority, "priority", i32::MIN, i32::MAX)?.unwrap_or(0),
        })
    }
}

impl PyProducer {
    /// `send`'s work (see `hot_methods`), the arguments as PyO3 would pass them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_one(
        &self,
        py: Python<'_>,
        topic: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        partition: Option<&Bound<'_, PyAny>>,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let SendArgs { topic, value, key, headers, partition, priority } =
            SendArgs::convert(topic, value, key, headers, partition, priority)?;
        let topic = topic.as_ref();
        match self.inner.send_record(topic, value, key, &headers, partition, priority, false) {
            Ok(accepted) => Ok(accepted),
            Err(SendError::Backpressure(reason)) if reason == "would block" => {
                // Wait for room without the GIL, so the writer and other threads can run.
                let (topic, value, key) =
                    (topic.to_owned(), value.map(<[u8]>::to_vec), key.map(<[u8]>::to_vec));
                let inner = self.inner.clone();
                py.detach(move || {
                    inner.send_record(
                        &topic,
                        value.as_deref(),
                        key.as_deref(),
                        &headers,
                        partition,
                        priority,
                        true,
                    )
                })
                .map_err(send_error)
            }
            Err(e) => Err(send_error(e)),
        }
    }

    /// The engine producer, unchecked (for the async sends, whose engine call checks).
    pub(crate) fn inner(&self) -> &Arc<Producer> {
        &self.inner
    }

    /// The engine producer (for the waker's bells); fails in a forked child.
    pub(crate) fn engine(&self) -> PyResult<&Arc<Producer>> {
        self.inner.check_not_inherited().map_err(CoreError)?;
        Ok(&self.inner)
    }
}

pub(crate) fn send_error(e: SendError) -> PyErr {
    match e {
        SendError::Backpressure(msg) => BackpressureError::new_err(msg),
        SendError::Failed(e) => CoreError(e).into(),
    }
}

#[pymethods]
impl PyProducer {
    #[new]
    #[pyo3(signature = (
        store, *, name=None, idempotent=true, buffer_messages=None, high_watermark=None,
        low_watermark=None, on_full=None, block_timeout=None, max_batch_messages=None, linger_ms=None,
        max_lag=None, compression=None,
    ))]
    #[allow(clippy::too_many_arguments)] // mirrors the keyword options of Store.producer
    fn new(
        py: Python<'_>,
        store: &PyStore,
        name: Option<&Bound<'_, PyAny>>,
        idempotent: bool,
        buffer_messages: Option<&Bound<'_, PyAny>>,
        high_watermark: Option<&Bound<'_, PyAny>>,
        low_watermark: Option<&Bound<'_, PyAny>>,
        on_full: Option<&Bound<'_, PyAny>>,
        block_timeout: Option<&Bound<'_, PyAny>>,
        max_batch_messages: Option<&Bound<'_, PyAny>>,
        linger_ms: Option<&Bound<'_, PyAny>>,
        max_lag: Option<&Bound<'_, PyAny>>,
        compression: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        store.check_open()?;
        let name = name.filter(|n| !n.is_none()).map(|n| args::utf8(n, "name")).transpose()?;
        let name = name.map(|n| n.into_owned());
        let real = |v: Option<&Bound<'_, PyAny>>, arg: &str, default: f64| {
            v.map_or(Ok(default), |v| args::real(v, arg))
        };
        let (high_watermark, low_watermark) = (
            real(high_watermark, "high_watermark", defaults::HIGH_WATERMARK)?,
            real(low_watermark, "low_watermark", defaults::LOW_WATERMARK)?,
        );
        let linger_ms = real(linger_ms, "linger_ms", defaults::LINGER_MS)?;
        let on_full = on_full.map(|o| args::text(o, "on_full")).transpose()?;
        let on_full = match on_full.as_deref().unwrap_or(defaults::ON_FULL) {
            "block" => OnFull::Block(args::seconds(block_timeout, "block_timeout")?),
            "raise" => OnFull::Raise,
            "shed" => OnFull::Shed,
            other => {
                return Err(InvalidConfigError::new_err(format!(
                    "on_full must be \"block\", \"raise\" or \"shed\", got {other:?}"
                )))
            }
        };
        let positive = |v: Option<&Bound<'_, PyAny>>, what: &str, default: usize| {
            v.map_or(Ok(default), |v| args::positive(v, what))
        };
        if !(linger_ms >= 0.0 && linger_ms.is_finite()) {
            return Err(InvalidConfigError::new_err(format!(
                "linger_ms must be a non-negative number of milliseconds, got {linger_ms}"
            )));
        }
        let config = ProducerConfig {
            buffer_messages: positive(buffer_messages, "buffer_messages", defaults::BUFFER_MESSAGES)?,
            high_watermark,
            low_watermark,
            on_full,
            max_batch_messages: positive(
                max_batch_messages,
                "max_batch_messages",
                defaults::MAX_BATCH_MESSAGES,
            )?,
            linger: Duration::from_secs_f64(linger_ms / 1000.0),
            max_lag: args::opt_int_in(max_lag, "max_lag", 1_u64, i64::MAX as u64)?,
            compression: compression.filter(|c| !c.is_none()).map(codec).transpose()?,
        };
        config.validate().map_err(CoreError)?;
        let store = store.inner().clone();
        let inner = run_detached(py, || {
            let identity = if idempotent { Some(Identity::claim(&store, name.as_deref())?) } else { None };
            Producer::new(store.clone(), config, identity)
        })?;
        Ok(PyProducer { inner: Arc::new(inner), name })
    }

    /// The codec of this producer's batches (`"none"`, `"lz4"`, `"zstd"`), or None when
    /// each topic's own `compression` setting applies.
    #[getter]
    fn compression(&self) -> Option<&'static str> {
        self.inner.config().compression.map(Compression::name)
    }

    /// The producer's name, if it has one.
    #[getter]
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// True if batches carry a producer id, epoch and sequence numbers.
    #[getter]
    fn idempotent(&self) -> bool {
        self.inner.identity().is_some()
    }

    /// The producer id (None unless idempotent). A named producer keeps it across opens.
    #[getter]
    fn producer_id(&self) -> Option<i64> {
        self.inner.identity().map(|i| i.producer_id)
    }

    /// The epoch (None unless idempotent): every open of a named producer bumps it.
    #[getter]
    fn producer_epoch(&self) -> Option<i16> {
        self.inner.identity().map(|i| i.epoch)
    }

    /// True while a transaction is open.
    #[getter]
    fn in_transaction(&self) -> bool {
        self.inner.in_transaction()
    }

    /// Starts a transaction (use `Store.transaction`, which also commits consumer
    /// offsets): messages sent until it ends are visible to readers only once committed.
    fn begin_transaction(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.check_not_inherited().map_err(CoreError)?;
        if self.inner.is_closed() {
            return Err(StoreClosedError::new_err("the producer is closed"));
        }
        let inner = self.inner.clone();
        run_detached(py, move || inner.begin_transaction())
    }

    /// Writes the transaction's messages and commits them in every partition at once; if
    /// a write failed, aborts instead and raises the failure.
    fn commit_transaction(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.clone();
        run_detached(py, move || inner.commit_transaction())
    }

    /// Aborts the transaction: readers never see its messages.
    fn abort_transaction(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.clone();
        run_detached(py, move || inner.abort_transaction())
    }

    /// Messages accepted by `send` so far: the target of `flushed()`.
    fn sent_count(&self) -> PyResult<u64> {
        Ok(self.engine()?.sent_count())
    }

    /// `flush` that never waits (for asyncio): True once every message counted in
    /// `target` (a `sent_count()`) is written (and fsynced if the policy says so) or
    /// dropped; raises the writer's failure then, as `flush` does. Otherwise wakes the
    /// writer and returns False: wait on `Bell.flush(producer)` and call again.
    fn flushed(&self, target: u64) -> PyResult<bool> {
        self.inner.flushed(target).map_err(|e| CoreError(e).into())
    }

    /// Counts an async flusher in (before its first `flushed()` check) or out (after its
    /// last, also when cancelled); while counted the writer reports every round on
    /// `Bell.flush(producer)`.
    fn set_flushing(&self, on: bool) -> PyResult<()> {
        self.engine()?.set_flushing(on);
        Ok(())
    }

    /// Counts `seconds` an async sender waited for the end of pressure into
    /// `blocked_seconds` (it waits in its event loop, not in a call).
    fn add_blocked(&self, seconds: f64) -> PyResult<()> {
        if !(seconds >= 0.0 && seconds.is_finite()) {
            return Err(InvalidConfigError::new_err(format!(
                "seconds must be a non-negative number, got {seconds}"
            )));
        }
        self.engine()?.add_blocked(Duration::from_secs_f64(seconds));
        Ok(())
    }

    /// Waits until everything sent so far is written (and fsynced if the store's policy
    /// says so). Returns False if `timeout` seconds passed first.
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let timeout = args::seconds(timeout, "timeout")?;
        let inner = self.inner.clone();
        run_detached(py, move || inner.flush(timeout))
    }

    /// Counters: `buffered`, `sent`, `written`, `failed`, `dropped` (priority -> count),
    /// `high_watermark_hits`, `blocked_seconds`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.inner.check_not_inherited().map_err(CoreError)?;
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("buffered", s.buffered)?;
        d.set_item("sent", s.sent)?;
        d.set_item("written", s.written)?;
        d.set_item("failed", s.failed)?;
        let dropped = PyDict::new(py);
        for (priority, count) in s.dropped {
            dropped.set_item(priority, count)?;
        }
        d.set_item("dropped", dropped)?;
        d.set_item("high_watermark_hits", s.high_watermark_hits)?;
        d.set_item("blocked_seconds", s.blocked_seconds)?;
        Ok(d)
    }

    /// Starts or ends backpressure imposed from outside the buffer (used by `max_lag`).
    fn _set_external_pressure(&self, on: bool) -> PyResult<()> {
        self.inner.check_not_inherited().map_err(CoreError)?;
        self.inner.set_external_pressure(on);
        Ok(())
    }

    /// Names of the topics this producer has sent to.
    fn _topics(&self) -> PyResult<Vec<String>> {
        self.inner.check_not_inherited().map_err(CoreError)?;
        Ok(self.inner.topics())
    }

    /// Flushes and stops the writer thread. Closing twice is harmless.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.clone();
        run_detached(py, move || inner.close())
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        if self.inner.check_not_inherited().is_err() {
            return format!("Producer(name={:?}, inherited across fork: unusable)", self.name);
        }
        let s = self.inner.stats();
        format!(
            "Producer(name={:?}, buffered={}, sent={}, written={})",
            self.name, s.buffered, s.sent, s.written
        )
    }
}
