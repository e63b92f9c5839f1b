//! `Topic`: appends and reads on a topic's partitions.

use std::borrow::Cow;
use std::sync::Arc;

use numpy::PyReadonlyArray1;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use tidelog_core::format::{headers, BatchMeta, Record, ValuesBatch};
use tidelog_core::log::{now_ms, ReadResult};
use tidelog_core::{PartitionLog, Topic};

use crate::args::{self, type_name};
use crate::errors::{to_py, InvalidConfigError};
use crate::gil::run_detached;
use crate::message::{MessageIterator, RecordBatch, Records};
use crate::view::BorrowedBuffer;

/// Bytes of batches a read returns at most unless told otherwise.
const READ_MAX_BYTES: usize = 16 << 20;

/// Value bytes and records up to which `append_batch` of a list writes without letting go
/// of the GIL (when the append lock is free): encoding and checksumming that much takes
/// well under a microsecond, little more than letting go of the GIL and taking it back.
const SMALL_BATCH_BYTES: usize = 4096;
const SMALL_BATCH_RECORDS: usize = 64;

/// A topic of a store: a fixed number of partitions, each an ordered log of messages.
#[pyclass(frozen, module = "tidelog._core", name = "Topic")]
pub struct PyTopic {
    inner: Arc<Topic>,
    name: Py<PyString>,
}

impl PyTopic {
    /// `append`'s work (see [`APPEND_DOC`]), the arguments as PyO3 would pass them.
    pub(crate) fn append_one(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        partition: Option<&Bound<'_, PyAny>>,
        timestamp_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(u32, u64)> {
        // None is a tombstone: no value, and compaction deletes the key.
        let tombstone = value.is_none();
        let value: &[u8] = if tombstone { &[] } else { expect_bytes(value, "value")?.as_bytes() };
        let key = key.filter(|k| !k.is_none()).map(|k| expect_bytes(k, "key")).transpose()?;
        let encoded_headers = encode_headers(headers)?;
        let timestamp_ms = args::timestamp(timestamp_ms, "timestamp_ms")?;
        let log = to_py(self.inner.choose(args::partition(partition)?, key.map(|k| k.as_bytes())))?;
        let record = Record {
            timestamp: timestamp_ms.unwrap_or_else(now_ms),
            key: key.map(|k| k.as_bytes()),
            value,
            headers: &encoded_headers,
            tombstone,
        };
        let meta = BatchMeta::plain(0);
        // Fast path: a small append into the page cache takes ~100 ns; releasing and
        // re-taking the GIL would cost as much again. We only let go of the GIL when the
        // append lock is contended or an fsync is due.
        let sync = log.config().fsync == tidelog_core::FsyncPolicy::Always;
        if !sync {
            if let Some(done) = to_py(log.try_append(&[record], meta))? {
                return Ok((log.partition(), done.base_offset));
            }
        }
        let (value, key) = (value.to_vec(), key.map(|k| k.as_bytes().to_vec()));
        let timestamp = record.timestamp;
        let done = run_detached(py, || {
            let record = Record {
                timestamp,
                key: key.as_deref(),
                value: &value,
                headers: &encoded_headers,
                tombstone,
            };
            log.append(&[record], meta)
        })?;
        Ok((log.partition(), done.base_offset))
    }

    /// The engine topic.
    pub(crate) fn engine(&self) -> &Arc<Topic> {
        &self.inner
    }

    /// Wraps an engine topic.
    pub fn new(py: Python<'_>, inner: Arc<Topic>) -> Self {
        let name = PyString::new(py, inner.name()).unbind();
        PyTopic { inner, name }
    }
}

pub(crate) fn expect_bytes<'a, 'py>(
    obj: &'a Bound<'py, PyAny>,
    arg: &str,
) -> PyResult<&'a Bound<'py, PyBytes>> {
    obj.cast::<PyBytes>()
        .map_err(|_| PyTypeError::new_err(format!("{arg} must be bytes, got {}", type_name(obj))))
}

/// Encodes a `dict[str, bytes]` (or iterable of pairs) of headers.
///
/// Names and values are read from the Python objects as each is encoded: a header costs no
/// allocation of its own on the way in.
pub(crate) fn encode_headers(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<u8>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else { return Ok(Vec::new()) };
    let mut encoder = headers::Encoder::default();
    if let Ok(dict) = obj.cast::<PyDict>() {
        // Nothing here runs Python code, so the dict cannot change while it is read.
        for (k, v) in dict.iter() {
            let (name, value) = header_pair(&k, &v)?;
            to_py(encoder.push(&name, value))?;
        }
    } else {
        let items = obj.try_iter().map_err(|_| {
            PyTypeError::new_err(format!("headers must be a dict[str, bytes], got {}", type_name(obj)))
        })?;
        for item in items {
            let item = item?;
            let pair = item.cast::<PyTuple>().ok().filter(|t| t.len() == 2).ok_or_else(|| {
                PyTypeError::new_err(
                    "headers must be a dict[str, bytes] or an iterable of (str, bytes) pairs",
                )
            })?;
            let (k, v) = (pair.get_item(0)?, pair.get_item(1)?);
            let (name, value) = header_pair(&k, &v)?;
            to_py(encoder.push(&name, value))?;
        }
    }
    to_py(encoder.finish())
}

fn header_pair<'a>(k: &'a Bound<'_, PyAny>, v: &'a Bound<'_, PyAny>) -> PyResult<(Cow<'a, str>, &'a [u8])> {
    if !k.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!("header names must be str, got {}", type_name(k))));
    }
    let name = args::utf8(k, "header name")?;
    // The header's name is formatted into the argument only on the error path.
    let value = v
        .cast::<PyBytes>()
        .map_err(|_| PyTypeError::new_err(format!("header {name:?} must be bytes, got {}", type_name(v))))?;
    Ok((name, value.as_bytes()))
}

impl PyTopic {
    #[inline]
    fn log(&self, partition: &Bound<'_, PyAny>) -> PyResult<&PartitionLog> {
        to_py(self.inner.partition(args::required_partition(partition)?))
    }

    /// `read` of `log` as `(messages, next_offset)`: what `read_messages` returns.
    fn message_list<'py>(
        &self,
        py: Python<'py>,
        log: &PartitionLog,
        read: ReadResult,
    ) -> PyResult<(Bound<'py, PyList>, u64)> {
        let next_offset = read.next_offset;
        Ok((Records::new(read).to_list(py, &self.name, log.partition())?, next_offset))
    }
}

#[pymethods]
impl PyTopic {
    /// The topic's stored settings (shared by every process): `segment_bytes`,
    /// `index_interval_bytes`, `max_message_bytes`, `retention_bytes`, `retention_ms`,
    /// `cleanup_policy`, `delete_retention_ms`, `compression`.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let topic = self.inner.clone();
        let settings = run_detached(py, move || topic.config())?;
        crate::store::settings_dict(py, &settings)
    }

    /// Compacts the closed segments of every partition now (a compacted topic only; the
    /// background cleaner does the same when a partition's dirty ratio passes its
    /// threshold). Waits for a cleaner already working on a partition, in any process.
    ///
    /// With `bytes_per_second`, reads plus writes stay within that budget (as the
    /// background cleaner's do). Returns a dict: `segments_before` (segments rewritten),
    /// `segments_after` (what they became), `bytes_read`, `bytes_written`, `records_read`,
    /// `records_removed`, `tombstones_removed`. Clean segments are left alone: with nothing
    /// closed and no tombstone expired since the last compaction nothing is read, and a
    /// segment this compaction would not change is not rewritten.
    #[pyo3(signature = (*, bytes_per_second=None))]
    fn compact<'py>(&self, py: Python<'py>, bytes_per_second: Option<u64>) -> PyResult<Bound<'py, PyDict>> {
        let topic = self.inner.clone();
        let pace =
            tidelog_core::log::Pace { bytes_per_second: bytes_per_second.filter(|&b| b > 0), stop: None };
        let stats = run_detached(py, move || topic.compact_paced(pace))?;
        let d = PyDict::new(py);
        d.set_item("segments_before", stats.segments_before)?;
        d.set_item("segments_after", stats.segments_after)?;
        d.set_item("bytes_read", stats.bytes_read)?;
        d.set_item("bytes_written", stats.bytes_written)?;
        d.set_item("records_read", stats.records_read)?;
        d.set_item("records_removed", stats.records_removed)?;
        d.set_item("tombstones_removed", stats.tombstones_removed)?;
        Ok(d)
    }

    /// Iterates `(key, value)` of the newest value of every key over all partitions,
    /// tombstones left out: `dict(topic.latest())`.
    fn latest<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let topic = self.inner.clone();
        let pairs = run_detached(py, move || topic.latest())?;
        let list = PyList::empty(py);
        for (k, v) in pairs {
            list.append((PyBytes::new(py, &k), PyBytes::new(py, &v)))?;
        }
        list.try_iter().map(Bound::into_any)
    }

    /// The dirty ratio of the topic's closed segments (bytes compaction has not seen
    /// yet over the bytes of all closed segments), with `partition` one partition's.
    #[pyo3(signature = (partition=None))]
    fn dirty_ratio(&self, py: Python<'_>, partition: Option<u32>) -> PyResult<f64> {
        let topic = self.inner.clone();
        run_detached(py, move || match partition {
            Some(p) => topic.partition(p)?.dirty_ratio(),
            None => topic.dirty_ratio(),
        })
        .map(|r| r.ratio())
    }

    /// The topic's name.
    #[getter]
    fn name(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }

    /// Number of partitions.
    #[getter]
    fn partitions(&self) -> u32 {
        self.inner.partition_count()
    }

    /// The topic's identity: a random id given when it was created. A topic deleted and
    /// created again under the same name has a new one.
    #[getter]
    fn incarnation(&self) -> u64 {
        self.inner.incarnation()
    }

    /// Appends many values as one atomic, CRC-checked batch and returns
    /// `(partition, first_offset)`.
    ///
    /// `values` is either a list of `bytes`, or one bytes-like buffer cut into values by
    /// `lengths` (a sequence or numpy array of non-negative integers summing to its size).
    /// A None in the list is a record without a value (a tombstone; the values carry no key,
    /// so a compacted topic refuses them as it does any keyless message).
    #[pyo3(signature = (values, *, lengths=None, partition=None, timestamp_ms=None))]
    fn append_batch(
        &self,
        py: Python<'_>,
        values: &Bound<'_, PyAny>,
        lengths: Option<&Bound<'_, PyAny>>,
        partition: Option<&Bound<'_, PyAny>>,
        timestamp_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(u32, u64)> {
        let timestamp = args::timestamp(timestamp_ms, "timestamp_ms")?.unwrap_or_else(now_ms);
        let log = to_py(self.inner.choose(args::partition(partition)?, None))?;
        let meta = BatchMeta::plain(0);
        let offset = match lengths.filter(|l| !l.is_none()) {
            None => {
                let list = values.cast::<PyList>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "values must be a list of bytes (or a buffer with lengths=...), got {}",
                        type_name(values)
                    ))
                })?;
                // The list's items are held here, so the bytes borrowed from them live (and,
                // being bytes, stay unchanged) while the GIL is let go.
                let items: Vec<Option<Bound<'_, PyBytes>>> = list
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match v.cast::<PyBytes>() {
                        Ok(b) => Ok(Some(b.clone())),
                        // None is a tombstone, as in `append`.
                        Err(_) if v.is_none() => Ok(None),
                        // The argument name is formatted only on the error path.
                        Err(_) => Err(PyTypeError::new_err(format!(
                            "values[{i}] must be bytes or None, got {}",
                            type_name(&v)
                        ))),
                    })
                    .collect::<PyResult<_>>()?;
                if items.is_empty() {
                    return Err(InvalidConfigError::new_err("values must not be empty"));
                }
                let records: Vec<Record<'_>> = items
                    .iter()
                    .map(|v| Record {
                        timestamp,
                        key: None,
                        value: v.as_ref().map_or(&[], |b| b.as_bytes()),
                        headers: &[],
                        tombstone: v.is_none(),
                    })
                    .collect();
                // A small batch is written holding the GIL when the append lock is free, as
                // `append` writes one message: letting go of the GIL and taking it again
                // would cost as much as the write.
                let bytes: usize = records.iter().map(|r| r.value.len()).sum();
                let small = bytes <= SMALL_BATCH_BYTES && records.len() <= SMALL_BATCH_RECORDS;
                if small && log.config().fsync != tidelog_core::FsyncPolicy::Always {
                    if let Some(done) = to_py(log.try_append(&records, meta))? {
                        return Ok((log.partition(), done.base_offset));
                    }
                }
                run_detached(py, || log.append(&records, meta))?.base_offset
            }
            Some(lengths) => {
                let buffer = BorrowedBuffer::get(values, "values")?;
                let lengths = extract_lengths(py, lengths)?;
                let bytes = buffer.as_slice();
                let batch = ValuesBatch::new(bytes, &lengths, timestamp);
                let append = || log.append_values(batch).map(|a| a.base_offset);
                if buffer.immutable {
                    run_detached(py, append)?
                } else {
                    // A mutable exporter (bytearray, writable memoryview) could be changed by
                    // another Python thread if we let go of the GIL: keep it.
                    to_py(append())?
                }
            }
        };
        Ok((log.partition(), offset))
    }

    /// Appends `values` to `partition` as one batch stamped with an idempotent producer's
    /// identity: the building block of `Producer` (which numbers its batches itself), for
    /// writers that keep their own sequence numbers. Returns `(first_offset, duplicate)`;
    /// a batch repeating one of the producer's last five is not written again and its
    /// original first offset comes back with `duplicate=True`. A None value is a record
    /// without a value (a tombstone), as in `append_batch`.
    ///
    /// Raises `OutOfOrderSequenceError` for a sequence gap and `ProducerFencedError` for an
    /// epoch older than one already written to the partition.
    #[pyo3(signature = (values, *, producer_id, producer_epoch, base_sequence, partition=None))]
    fn append_sequenced(
        &self,
        py: Python<'_>,
        values: Vec<Option<PyBackedBytes>>,
        producer_id: &Bound<'_, PyAny>,
        producer_epoch: &Bound<'_, PyAny>,
        base_sequence: &Bound<'_, PyAny>,
        partition: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(u64, bool)> {
        let log = to_py(self.inner.partition(args::partition(partition)?.unwrap_or(0)))?;
        let producer_id = args::int_in(producer_id, "producer_id", 0, i64::MAX)?;
        let producer_epoch = args::int_in(producer_epoch, "producer_epoch", 0, i16::MAX)?;
        let base_sequence = args::int_in(base_sequence, "base_sequence", 0, i32::MAX)?;
        if values.is_empty() {
            return Err(InvalidConfigError::new_err("values must not be empty"));
        }
        let meta = BatchMeta { base_offset: 0, attributes: 0, producer_id, producer_epoch, base_sequence };
        let timestamp = now_ms();
        let done = run_detached(py, || {
            let records: Vec<Record<'_>> = values
                .iter()
                .map(|v| Record {
                    timestamp,
                    key: None,
                    value: v.as_deref().unwrap_or_default(),
                    headers: &[],
                    // None is a tombstone, as in `append`.
                    tombstone: v.is_none(),
                })
                .collect();
            log.append(&records, meta)
        })?;
        Ok((done.base_offset, done.duplicate))
    }

    /// Iterates messages of `partition` from `offset` (default: the start offset) or from
    /// the first message with a timestamp `>= timestamp_ms`, up to the end of the log.
    #[pyo3(signature = (partition=None, offset=None, *, timestamp_ms=None))]
    fn read(
        &self,
        py: Python<'_>,
        partition: Option<&Bound<'_, PyAny>>,
        offset: Option<&Bound<'_, PyAny>>,
        timestamp_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<MessageIterator> {
        let log = to_py(self.inner.partition(args::partition(partition)?.unwrap_or(0)))?;
        let offset = offset.filter(|o| !o.is_none()).map(|o| args::offset(o, log)).transpose()?;
        let timestamp_ms = args::timestamp(timestamp_ms, "timestamp_ms")?;
        let start = match (offset, timestamp_ms) {
            (Some(_), Some(_)) => {
                return Err(InvalidConfigError::new_err("give either offset or timestamp_ms, not both"))
            }
            (Some(o), None) => {
                // Validate now so a bad offset fails at the call, not at the first next().
                to_py(log.read(o, 0, 0))?;
                o
            }
            (None, Some(ts)) => run_detached(py, || match log.offset_for_timestamp(ts)? {
                Some(o) => Ok(o),
                None => log.end_offset(),
            })?,
            (None, None) => to_py(log.start_offset())?,
        };
        Ok(MessageIterator::new(self.inner.clone(), self.name.clone_ref(py), log.partition(), start))
    }

    /// Reads up to `max_messages` messages of `partition` from `offset` as one
    /// [`RecordBatch`]. Reading at the end offset returns an empty batch.
    ///
    /// Only committed messages are returned (`isolation="read_committed"`): reading stops
    /// at a transaction still open. `"read_uncommitted"` also returns the messages of open
    /// transactions (listed by `RecordBatch.pending_offsets()`); aborted transactions are
    /// never returned.
    #[pyo3(signature = (
        partition=None, offset=None, *, max_messages=None, max_bytes=None, isolation=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn read_batch(
        &self,
        py: Python<'_>,
        partition: Option<&Bound<'_, PyAny>>,
        offset: Option<&Bound<'_, PyAny>>,
        max_messages: Option<&Bound<'_, PyAny>>,
        max_bytes: Option<&Bound<'_, PyAny>>,
        isolation: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<RecordBatch> {
        let isolation = isolation.map(|i| args::text(i, "isolation")).transpose()?;
        let committed = match isolation.as_deref().unwrap_or("read_committed") {
            "read_committed" => true,
            "read_uncommitted" => false,
            other => {
                return Err(InvalidConfigError::new_err(format!(
                    "isolation must be \"read_committed\" or \"read_uncommitted\", got {other:?}"
                )))
            }
        };
        let log = to_py(self.inner.partition(args::partition(partition)?.unwrap_or(0)))?;
        let offset = match offset.filter(|o| !o.is_none()) {
            Some(o) => args::offset(o, log)?,
            None => to_py(log.start_offset())?,
        };
        let max_messages = max_messages.map_or(Ok(10_000), |m| args::limit(m, "max_messages"))?;
        let max_bytes = max_bytes.map_or(Ok(READ_MAX_BYTES), |m| args::limit(m, "max_bytes"))?;
        let read = run_detached(py, || {
            if committed {
                log.read(offset, max_messages, max_bytes)
            } else {
                log.read_uncommitted(offset, max_messages, max_bytes)
            }
        })?;
        Ok(RecordBatch::new(self.name.clone_ref(py), log.partition(), read))
    }

    /// Reads as `read_batch(partition, offset, max_messages=max_messages)` does (committed
    /// messages only) and returns `(messages, next_offset)`: the messages as a list, and
    /// the offset to read next. The building block of `Consumer.poll`, which hands out
    /// lists: no `RecordBatch` and no iteration over it between the read and the list.
    fn read_messages<'py>(
        &self,
        py: Python<'py>,
        partition: &Bound<'py, PyAny>,
        offset: &Bound<'py, PyAny>,
        max_messages: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyList>, u64)> {
        let log = self.log(partition)?;
        let offset = args::offset(offset, log)?;
        let max_messages = args::limit(max_messages, "max_messages")?;
        let read = run_detached(py, || log.read(offset, max_messages, READ_MAX_BYTES))?;
        self.message_list(py, log, read)
    }

    /// First retained offset of `partition`.
    fn start_offset(&self, partition: &Bound<'_, PyAny>) -> PyResult<u64> {
        to_py(self.log(partition)?.start_offset())
    }

    /// The first offset of `partition` a committed read does not pass: where the oldest
    /// transaction still open begins, or the end offset.
    fn last_stable_offset(&self, py: Python<'_>, partition: &Bound<'_, PyAny>) -> PyResult<u64> {
        let log = self.log(partition)?;
        run_detached(py, || log.last_stable_offset())
    }

    /// Next offset to be written to `partition`.
    fn end_offset(&self, partition: &Bound<'_, PyAny>) -> PyResult<u64> {
        to_py(self.log(partition)?.end_offset())
    }

    /// Offset of the first message of `partition` with timestamp `>= timestamp_ms`, or
    /// None if every message is older.
    fn offset_for_timestamp(
        &self,
        py: Python<'_>,
        partition: &Bound<'_, PyAny>,
        timestamp_ms: &Bound<'_, PyAny>,
    ) -> PyResult<Option<u64>> {
        let log = self.log(partition)?;
        let timestamp_ms = args::int_in(timestamp_ms, "timestamp_ms", i64::MIN, i64::MAX)?;
        run_detached(py, || log.offset_for_timestamp(timestamp_ms))
    }

    /// A ticket for `wait()`: take it before looking for new messages.
    fn ticket(&self) -> PyResult<u32> {
        to_py(self.inner.check_not_inherited())?;
        Ok(self.inner.ticket())
    }

    /// Sleeps (without the GIL) until any process appends to any partition of this topic
    /// after `ticket` was taken, or `timeout` seconds pass, first spinning on the doorbell
    /// for at most `spin_us` microseconds (0: sleep at once). Returns whether something was
    /// appended; may return early, so re-check.
    #[pyo3(signature = (ticket, timeout=None, spin_us=None))]
    fn wait(
        &self,
        py: Python<'_>,
        ticket: &Bound<'_, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
        spin_us: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let ticket = args::int_in(ticket, "ticket", 0, u32::MAX)?;
        let timeout = args::seconds(timeout, "timeout")?;
        let spin = args::spin(spin_us)?;
        to_py(self.inner.check_not_inherited())?;
        let topic = self.inner.clone();
        Ok(py.detach(move || topic.wait_spin(ticket, timeout, spin)))
    }

    /// `wait(ticket, timeout, spin_us)`, then, if the doorbell rang, `ticket()` and
    /// `read_messages(partition, offset, max_messages)` in the same call: `None` if nothing
    /// was appended in time, else `(messages, next_offset, ticket)`, where `ticket` was taken
    /// before the read (wait on it if the messages are not enough). The way from a wake-up
    /// to the messages of a consumer that owns one partition: one release of the GIL
    /// instead of three calls (an append to another partition gives an empty list).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (ticket, partition, offset, max_messages, timeout=None, spin_us=None))]
    fn wait_messages<'py>(
        &self,
        py: Python<'py>,
        ticket: &Bound<'py, PyAny>,
        partition: &Bound<'py, PyAny>,
        offset: &Bound<'py, PyAny>,
        max_messages: &Bound<'py, PyAny>,
        timeout: Option<&Bound<'py, PyAny>>,
        spin_us: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<(Bound<'py, PyList>, u64, u32)>> {
        let ticket = args::int_in(ticket, "ticket", 0, u32::MAX)?;
        let log = self.log(partition)?;
        let offset = args::offset(offset, log)?;
        let max_messages = args::limit(max_messages, "max_messages")?;
        let timeout = args::seconds(timeout, "timeout")?;
        let spin = args::spin(spin_us)?;
        // No fork check of its own: `log` made it.
        let topic = &self.inner;
        let woken = run_detached(py, || {
            if !topic.wait_spin(ticket, timeout, spin) {
                return Ok(None);
            }
            // Taken before the read, as a caller of `ticket()` would: an append after it
            // and missed by the read moves the doorbell past it.
            let next_ticket = topic.ticket();
            Ok(Some((log.read(offset, max_messages, READ_MAX_BYTES)?, next_ticket)))
        })?;
        let Some((read, next_ticket)) = woken else { return Ok(None) };
        let (messages, next_offset) = self.message_list(py, log, read)?;
        Ok(Some((messages, next_offset, next_ticket)))
    }

    /// Bytes of stored batches in `partition`.
    fn size_bytes(&self, py: Python<'_>, partition: &Bound<'_, PyAny>) -> PyResult<u64> {
        let log = self.log(partition)?;
        run_detached(py, || log.size_bytes())
    }

    /// The records a read of `partition` (of every partition with None) yields now:
    /// tombstones included, transaction markers and aborted or open transactions not. A
    /// compacted topic's offsets are sparse, so this counts what `end_offset -
    /// start_offset` overcounts. Reads every batch once (nothing is copied).
    #[pyo3(signature = (partition=None))]
    fn record_count(&self, py: Python<'_>, partition: Option<&Bound<'_, PyAny>>) -> PyResult<u64> {
        let logs: Vec<&PartitionLog> = match partition.filter(|p| !p.is_none()) {
            Some(p) => vec![self.log(p)?],
            None => to_py(self.inner.partitions())?.iter().collect(),
        };
        run_detached(py, || logs.iter().try_fold(0u64, |n, log| Ok(n + log.record_count()?)))
    }

    /// Number of segments of `partition`.
    fn segment_count(&self, py: Python<'_>, partition: &Bound<'_, PyAny>) -> PyResult<usize> {
        let log = self.log(partition)?;
        run_detached(py, || log.segment_count())
    }

    /// Deletes sealed segments of every partition that are past the retention limits.
    fn enforce_retention(&self, py: Python<'_>) -> PyResult<()> {
        let topic = self.inner.clone();
        run_detached(py, move || topic.partitions()?.iter().try_for_each(PartitionLog::enforce_retention))
    }

    /// Messages `start..end` of `partition` as a `pyarrow.Table` (see
    /// `tidelog.arrow.topic_to_arrow`); needs pyarrow.
    #[pyo3(signature = (partition, *, start=None, end=None))]
    fn to_arrow<'py>(
        slf: &Bound<'py, Self>,
        partition: &Bound<'py, PyAny>,
        start: Option<&Bound<'py, PyAny>>,
        end: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let arrow = slf.py().import("tidelog.arrow")?;
        arrow.call_method1("topic_to_arrow", (slf, partition, start, end))
    }

    fn __repr__(&self) -> String {
        format!("Topic(name={:?}, partitions={})", self.inner.name(), self.inner.partition_count())
    }
}

fn extract_lengths(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    let array: PyReadonlyArray1<'_, i64> = match obj.extract() {
        Ok(a) => a,
        Err(_) => {
            let np = py.import("numpy")?;
            let converted = np.call_method1("ascontiguousarray", (obj, "int64")).map_err(|_| {
                PyTypeError::new_err(format!("lengths must be a sequence of ints, got {}", type_name(obj)))
            })?;
            if converted.getattr("ndim")?.extract::<usize>()? != 1 {
                return Err(PyTypeError::new_err("lengths must be one-dimensional"));
            }
            converted.extract()?
        }
    };
    // Copied, never borrowed: another Python thread could change the array while the
    // append runs without the GIL (the core refuses negative lengths).
    Ok(match array.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => array.as_array().iter().copied().collect(),
    })
}
