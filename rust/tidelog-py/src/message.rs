//! `Message`, `RecordBatch` and the iterators over them.

use std::sync::{Arc, OnceLock};

use numpy::PyArray1;
use pyo3::exceptions::{PyIndexError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple};
use tidelog_core::format::headers;
use tidelog_core::log::{ReadChunk, ReadResult};
use tidelog_core::Topic;

use crate::errors::CorruptRecordError;
use crate::gil::run_detached;
use crate::view::ValueBuffer;

#[path = "arrow.rs"]
mod arrow;

/// One message read from a topic. Read-only.
// On a free list: iterating and polling make and drop one object per message, and a
// recycled one costs neither an allocation nor the cycle collector's attention (PyO3
// registers every class with the collector, but a reused object is not tracked, which is
// sound here: a message holds only bytes, a str and numbers, so it is never in a cycle).
// 2,048: a work queue's default prefetch, the most messages a batch makes at once.
#[pyclass(frozen, freelist = 2048, module = "tidelog._core", name = "Message")]
pub struct Message {
    /// Topic name.
    #[pyo3(get)]
    topic: Py<PyString>,
    /// Partition number.
    #[pyo3(get)]
    partition: u32,
    /// Offset within the partition.
    #[pyo3(get)]
    offset: u64,
    /// Milliseconds since the Unix epoch.
    #[pyo3(get)]
    timestamp_ms: i64,
    /// The key, or None.
    #[pyo3(get)]
    key: Option<Py<PyBytes>>,
    /// The value, or None for a tombstone (compaction then deletes the key).
    #[pyo3(get)]
    value: Option<Py<PyBytes>>,
    raw_headers: Box<[u8]>,
}

impl Message {
    /// The value, as the `value` attribute gives it.
    pub fn value_object(&self, py: Python<'_>) -> Py<PyAny> {
        self.value.as_ref().map_or_else(|| py.None(), |v| v.clone_ref(py).into_any())
    }

    /// The key, as the `key` attribute gives it.
    pub fn key_object(&self, py: Python<'_>) -> Py<PyAny> {
        self.key.as_ref().map_or_else(|| py.None(), |k| k.clone_ref(py).into_any())
    }

    /// The topic name.
    pub fn topic_object(&self, py: Python<'_>) -> Py<PyString> {
        self.topic.clone_ref(py)
    }

    /// The offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The partition.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The timestamp, ms since the epoch.
    pub fn timestamp(&self) -> i64 {
        self.timestamp_ms
    }

    /// The headers, as the `headers` attribute gives them.
    pub fn headers_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.headers(py)
    }
}

#[pymethods]
impl Message {
    /// Headers as a new `dict[str, bytes]`.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        let decoded = headers::decode(&self.raw_headers).ok_or_else(|| {
            CorruptRecordError::new_err(format!(
                "malformed headers at offset {} of partition {}",
                self.offset, self.partition
            ))
        })?;
        for (name, value) in decoded {
            dict.set_item(name, PyBytes::new(py, &value))?;
        }
        Ok(dict)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Message(topic={:?}, partition={}, offset={}, timestamp_ms={}, key={}, value={})",
            self.topic.bind(py).to_string(),
            self.partition,
            self.offset,
            self.timestamp_ms,
            self.key
                .as_ref()
                .map_or_else(|| "None".to_owned(), |k| format!("<{} bytes>", k.bind(py).as_bytes().len())),
            self.value
                .as_ref()
                .map_or_else(|| "None".to_owned(), |v| format!("<{} bytes>", v.bind(py).as_bytes().len())),
        )
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> bool {
        let Ok(other) = other.cast::<Message>() else { return false };
        let o = other.get();
        self.topic.bind(py).to_string() == o.topic.bind(py).to_string()
            && (self.partition, self.offset, self.timestamp_ms) == (o.partition, o.offset, o.timestamp_ms)
            && self.value.as_ref().map(|v| v.bind(py).as_bytes().to_vec())
                == o.value.as_ref().map(|v| v.bind(py).as_bytes().to_vec())
            && self.key.as_ref().map(|k| k.bind(py).as_bytes().to_vec())
                == o.key.as_ref().map(|k| k.bind(py).as_bytes().to_vec())
            && self.raw_headers == o.raw_headers
    }

    fn __hash__(&self) -> u64 {
        (u64::from(self.partition) << 48) ^ self.offset
    }
}

/// Where one record's parts lie in its chunk's mapping.
#[derive(Clone, Copy)]
struct Rec {
    chunk: u32,
    offset: u64,
    timestamp: i64,
    value: (usize, usize),
    tombstone: bool,
    key: Option<(usize, usize)>,
    headers: (usize, usize),
}

/// Records located in mapped batches; shared by `RecordBatch` and the read iterator. The
/// per-record table is built on first use: a zero-copy scan that only asks for
/// `value_buffer()` never pays for it.
pub struct Records {
    chunks: Vec<ReadChunk>,
    count: usize,
    table: OnceLock<Vec<Rec>>,
}

fn span(batch_start: usize, batch: &[u8], part: &[u8]) -> (usize, usize) {
    let start = batch_start + (part.as_ptr() as usize - batch.as_ptr() as usize);
    (start, start + part.len())
}

impl Records {
    /// Wraps a read result.
    pub fn new(read: ReadResult) -> Self {
        Records { chunks: read.chunks, count: read.count, table: OnceLock::new() }
    }

    fn recs(&self) -> &[Rec] {
        self.table.get_or_init(|| {
            let mut recs = Vec::with_capacity(self.count);
            for (i, chunk) in self.chunks.iter().enumerate() {
                let bytes = chunk.batch().bytes();
                for r in chunk.records() {
                    recs.push(Rec {
                        chunk: i as u32,
                        offset: r.offset,
                        timestamp: r.timestamp,
                        value: span(chunk.start, bytes, r.value),
                        tombstone: r.tombstone,
                        key: r.key.map(|k| span(chunk.start, bytes, k)),
                        headers: span(chunk.start, bytes, r.headers),
                    });
                }
            }
            recs
        })
    }

    fn slice(&self, rec: &Rec, (start, end): (usize, usize)) -> &[u8] {
        self.chunks[rec.chunk as usize].map.read(start, end).expect("record lies in its validated chunk")
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Every message, in order, as a new list: straight from the batches, without the
    /// per-record table (a list is made once, so the table would be built for nothing).
    pub fn to_list<'py>(
        &self,
        py: Python<'py>,
        topic: &Py<PyString>,
        partition: u32,
    ) -> PyResult<Bound<'py, PyList>> {
        let messages = self.chunks.iter().flat_map(|chunk| chunk.records()).map(|r| Message {
            topic: topic.clone_ref(py),
            partition,
            offset: r.offset,
            timestamp_ms: r.timestamp,
            key: r.key.map(|k| PyBytes::new(py, k).unbind()),
            value: (!r.tombstone).then(|| PyBytes::new(py, r.value).unbind()),
            raw_headers: r.headers.into(),
        });
        PyList::new(py, Counted { inner: messages, left: self.count })
    }

    /// Builds the `Message` for record `i`.
    pub fn message(&self, py: Python<'_>, topic: &Py<PyString>, partition: u32, i: usize) -> Message {
        let rec = &self.recs()[i];
        // The batch's bytes once, then its parts by plain indexing (not three bounds checks
        // against the mapping's published end).
        let chunk = &self.chunks[rec.chunk as usize];
        let batch = chunk.map.read(chunk.start, chunk.end).expect("chunk lies in published data");
        let part = |(start, end): (usize, usize)| &batch[start - chunk.start..end - chunk.start];
        Message {
            topic: topic.clone_ref(py),
            partition,
            offset: rec.offset,
            timestamp_ms: rec.timestamp,
            key: rec.key.map(|k| PyBytes::new(py, part(k)).unbind()),
            value: (!rec.tombstone).then(|| PyBytes::new(py, part(rec.value)).unbind()),
            raw_headers: part(rec.headers).into(),
        }
    }
}

/// An iterator known to yield exactly `left` items (the chunks' records, whose counts add
/// up to the read's): what `PyList::new` needs to make the list at its final size.
struct Counted<I> {
    inner: I,
    left: usize,
}

impl<I: Iterator> Iterator for Counted<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        if self.left == 0 {
            return None;
        }
        let item = self.inner.next()?;
        self.left -= 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<I: Iterator> ExactSizeIterator for Counted<I> {}

/// A batch of messages read from one partition: indexable, iterable, and viewable as one
/// buffer of values without copying.
// On a free list, as `Message`: a poll makes one per partition read (it holds a str and
// the mapped chunks, never a Python container, so it is never in a cycle either).
#[pyclass(frozen, sequence, freelist = 64, module = "tidelog._core", name = "RecordBatch")]
pub struct RecordBatch {
    topic: Py<PyString>,
    /// Partition the messages come from.
    #[pyo3(get)]
    partition: u32,
    /// The offset to read next (after the last message of this batch).
    #[pyo3(get)]
    next_offset: u64,
    records: Records,
}

impl RecordBatch {
    /// Every message, in order.
    pub fn messages(&self, py: Python<'_>) -> PyResult<Vec<Py<Message>>> {
        (0..self.records.len())
            .map(|i| Py::new(py, self.records.message(py, &self.topic, self.partition, i)))
            .collect()
    }

    /// Wraps a read result.
    pub fn new(topic: Py<PyString>, partition: u32, read: ReadResult) -> Self {
        let next_offset = read.next_offset;
        RecordBatch { topic, partition, next_offset, records: Records::new(read) }
    }
}

#[pymethods]
impl RecordBatch {
    fn __len__(&self) -> usize {
        self.records.len()
    }

    fn __getitem__(&self, py: Python<'_>, index: &Bound<'_, PyAny>) -> PyResult<Message> {
        // As a list: any int, however large, is an index (IndexError if out of range).
        let index = crate::args::int(index, "RecordBatch index")?;
        let n = self.records.len() as i128;
        let i = if index < 0 { index + n } else { index };
        if !(0..n).contains(&i) {
            return Err(PyIndexError::new_err(format!(
                "RecordBatch index {index} out of range for {n} messages"
            )));
        }
        Ok(self.records.message(py, &self.topic, self.partition, i as usize))
    }

    fn __iter__(slf: Bound<'_, Self>) -> RecordBatchIter {
        RecordBatchIter { batch: slf.unbind(), index: 0 }
    }

    /// Topic name.
    #[getter]
    fn topic(&self, py: Python<'_>) -> Py<PyString> {
        self.topic.clone_ref(py)
    }

    /// Offsets of the messages that belong to a transaction still open (only an
    /// uncommitted read, `read_batch(..., isolation="read_uncommitted")`, returns any).
    fn pending_offsets(&self) -> Vec<u64> {
        let chunks = &self.records.chunks;
        self.records.recs().iter().filter(|r| chunks[r.chunk as usize].pending).map(|r| r.offset).collect()
    }

    /// Every value, copied into a list of `bytes` (None for a tombstone).
    fn values<'py>(&self, py: Python<'py>) -> Vec<Option<Bound<'py, PyBytes>>> {
        self.records
            .recs()
            .iter()
            .map(|r| (!r.tombstone).then(|| PyBytes::new(py, self.records.slice(r, r.value))))
            .collect()
    }

    /// Offsets of the messages, as a numpy int64 array.
    #[getter]
    fn offsets<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        PyArray1::from_iter(py, self.records.recs().iter().map(|r| r.offset as i64))
    }

    /// Timestamps of the messages, as a numpy int64 array.
    #[getter]
    fn timestamps<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        PyArray1::from_iter(py, self.records.recs().iter().map(|r| r.timestamp))
    }

    /// All values as one buffer plus an int64 array of boundaries: value `i` is
    /// `buf[bounds[i]:bounds[i + 1]]`. When the messages come from one stored batch (the
    /// usual case when `max_messages` does not exceed the size the producer batched) the
    /// buffer is a zero-copy view of the mapped segment (of a compressed batch: of the
    /// values it was decompressed into when read); otherwise the values are copied once
    /// into a new buffer.
    fn value_buffer<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyMemoryView>, Bound<'py, PyArray1<i64>>)> {
        if let [chunk] = self.records.chunks.as_slice() {
            // One stored batch: its values are contiguous in the mapped segment.
            let batch = chunk.batch();
            let at = chunk.start + chunk.first_value_at();
            let mut bounds = Vec::with_capacity(chunk.count + 1);
            let mut total = 0usize;
            bounds.push(0i64);
            for i in chunk.skip..chunk.skip + chunk.count {
                total += batch.value_len(i) as usize;
                bounds.push(total as i64);
            }
            let view = ValueBuffer::new(chunk.map.clone(), at, at + total)
                .expect("values lie in the validated chunk");
            let buffer = PyMemoryView::from(&Bound::new(py, view)?.into_any())?;
            return Ok((buffer, PyArray1::from_vec(py, bounds)));
        }
        let recs = self.records.recs();
        let mut bounds = Vec::with_capacity(recs.len() + 1);
        let mut joined = Vec::new();
        bounds.push(0i64);
        for r in recs {
            joined.extend_from_slice(self.records.slice(r, r.value));
            bounds.push(joined.len() as i64);
        }
        let buffer = PyMemoryView::from(&PyBytes::new(py, &joined).into_any())?;
        let bounds = PyArray1::from_vec(py, bounds);
        Ok((buffer, bounds))
    }

    /// The batch as a `pyarrow.RecordBatch` with columns `offset`, `timestamp_ms`, `key`,
    /// `value` and `headers` (see `tidelog.arrow.record_batch_to_arrow`); needs pyarrow.
    fn to_arrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        arrow::to_arrow(py, &self.records, self.partition)
    }

    /// The batch's columns laid out for Apache Arrow (for `tidelog.arrow`, which
    /// `to_arrow()` uses; a low-level form, not needed otherwise): a tuple
    /// `(offsets, timestamps, value_views, value_validity, value_buffers, keys, key_bounds,
    /// key_validity, header_offsets, header_names, name_bounds, header_values,
    /// header_value_bounds)`. The values are Arrow `binary_view` views into
    /// `value_buffers`, zero-copy views of the mapped segments (or of compressed batches'
    /// decompressed images); validities are bitmaps, or None when nothing is null.
    fn arrow_columns<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        arrow::columns(py, &self.records, self.partition)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let first = self.records.recs().first().map_or(self.next_offset, |r| r.offset);
        format!(
            "RecordBatch(topic={:?}, partition={}, offsets={}..{}, messages={})",
            self.topic.bind(py).to_string(),
            self.partition,
            first,
            self.next_offset,
            self.records.len()
        )
    }
}

/// Iterator over a [`RecordBatch`].
// On a free list, as `RecordBatch` (it holds only its batch).
#[pyclass(freelist = 64, module = "tidelog._core", name = "RecordBatchIterator")]
pub struct RecordBatchIter {
    batch: Py<RecordBatch>,
    index: usize,
}

#[pymethods]
impl RecordBatchIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> Option<Message> {
        let batch = self.batch.get();
        if self.index >= batch.records.len() {
            return None;
        }
        self.index += 1;
        Some(batch.records.message(py, &batch.topic, batch.partition, self.index - 1))
    }
}

/// Iterator over a partition from an offset to the end of the log, reading in chunks.
#[pyclass(module = "tidelog._core", name = "MessageIterator")]
pub struct MessageIterator {
    topic: Arc<Topic>,
    name: Py<PyString>,
    partition: u32,
    next_offset: u64,
    current: Records,
    index: usize,
    done: bool,
}

/// Messages fetched per refill of a [`MessageIterator`].
const ITER_CHUNK_MESSAGES: usize = 1024;
/// Bytes of batches fetched per refill.
const ITER_CHUNK_BYTES: usize = 1 << 20;

impl MessageIterator {
    /// Starts at `offset`.
    pub fn new(topic: Arc<Topic>, name: Py<PyString>, partition: u32, offset: u64) -> Self {
        MessageIterator {
            topic,
            name,
            partition,
            next_offset: offset,
            current: Records::new(ReadResult::default()),
            index: 0,
            done: false,
        }
    }
}

#[pymethods]
impl MessageIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Message> {
        if self.index >= self.current.len() {
            if self.done {
                return Err(PyStopIteration::new_err(()));
            }
            let (topic, partition, offset) = (self.topic.clone(), self.partition, self.next_offset);
            let read = run_detached(py, move || {
                topic.partition(partition)?.read(offset, ITER_CHUNK_MESSAGES, ITER_CHUNK_BYTES)
            })?;
            if read.count == 0 {
                self.done = true;
                return Err(PyStopIteration::new_err(()));
            }
            self.next_offset = read.next_offset;
            self.current = Records::new(read);
            self.index = 0;
        }
        self.index += 1;
        Ok(self.current.message(py, &self.name, self.partition, self.index - 1))
    }
}
