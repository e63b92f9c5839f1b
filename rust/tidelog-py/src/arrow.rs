//! The columns of a `RecordBatch` laid out as Apache Arrow arrays want them:
//! `RecordBatch.to_arrow()` hands them to pyarrow in one import through the Arrow C data
//! interface ([`crate::arrow_ffi`]); `RecordBatch.arrow_columns()` gives them as Python
//! buffers (the low-level form).
//!
//! The value column is an Arrow `binary_view` array: one 16-byte view per value, pointing
//! into data buffers that are [`ValueBuffer`]s over the mapped segment (or over a compressed
//! batch's decompressed image). No value is copied, however many stored batches the
//! records come from: a view names its buffer and the value's position in it, so the batch
//! headers, keys and headers lying between two batches' values cost nothing. Values of at
//! most 12 bytes are inlined in their view, as the Arrow format requires. Keys, headers,
//! offsets and timestamps are gathered into new buffers in the same pass, without the GIL.
//!
//! A stored batch's values lie back to back, so its whole value blob is located in a data
//! buffer once (not every value): the views of one batch then cost a length, a 4-byte
//! prefix and two adds each.

use std::sync::Arc;

use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyMemoryView, PyTuple};
use tidelog_core::format::headers;
use tidelog_core::format::record::{ATTR_COMPACT, ATTR_UNIFORM};
use tidelog_core::log::{ChunkBytes, ReadChunk};

use super::Records;
use crate::arrow_ffi::{Exported, Node};
use crate::errors::CorruptRecordError;
use crate::view::ValueBuffer;

/// Bytes of an Arrow view.
const VIEW_BYTES: usize = 16;
/// Longest value stored inside its view rather than in a data buffer.
const INLINE_MAX: usize = 12;
/// A view's offset into its data buffer is an `i32`: a buffer spans at most this much.
const BUFFER_SPAN_MAX: usize = i32::MAX as usize;

/// An Arrow validity bitmap (bit `i % 8` of byte `i / 8`, 1 = valid), made only once a
/// null turns up: most columns have none.
struct Validity {
    bits: Vec<u8>,
    capacity: usize,
    nulls: usize,
}

impl Validity {
    fn new(capacity: usize) -> Self {
        Validity { bits: Vec::new(), capacity, nulls: 0 }
    }

    fn set_null(&mut self, i: usize) {
        if self.bits.is_empty() {
            self.bits = vec![0xff; self.capacity.div_ceil(8).max(1)];
        }
        self.bits[i / 8] &= !(1 << (i % 8));
        self.nulls += 1;
    }

    fn set_nulls(&mut self, rows: std::ops::Range<usize>) {
        // Not bit by bit: whole bytes where the range covers them.
        let mut i = rows.start;
        while i < rows.end {
            if i % 8 == 0 && rows.end - i >= 8 && !self.bits.is_empty() {
                self.bits[i / 8] = 0;
                self.nulls += 8;
                i += 8;
            } else {
                self.set_null(i);
                i += 1;
            }
        }
    }

    /// The bitmap's address, null when nothing is null (Arrow's way of saying "all valid").
    fn address(&self) -> *const u8 {
        if self.nulls == 0 {
            std::ptr::null()
        } else {
            self.bits.as_ptr()
        }
    }

    /// The bitmap, or None when nothing is null.
    fn into_py(self, py: Python<'_>) -> Bound<'_, PyAny> {
        if self.nulls == 0 {
            return py.None().into_bound(py);
        }
        PyBytes::new(py, &self.bits).into_any()
    }
}

/// A data buffer of the value views: `start..end` of one chunk's bytes.
struct DataBuffer {
    map: ChunkBytes,
    start: usize,
    end: usize,
}

impl DataBuffer {
    fn bytes(&self) -> &[u8] {
        self.map.read(self.start, self.end).expect("values lie in their validated chunk")
    }
}

fn same_bytes(a: &ChunkBytes, b: &ChunkBytes) -> bool {
    match (a, b) {
        (ChunkBytes::Mapped(x), ChunkBytes::Mapped(y)) => Arc::ptr_eq(x, y),
        (ChunkBytes::Image(x), ChunkBytes::Image(y)) => Arc::ptr_eq(x, y),
        _ => false,
    }
}

/// Every column of a record batch, built in one pass over its chunks.
struct Columns {
    offsets: Vec<i64>,
    timestamps: Vec<i64>,
    /// One Arrow view per value (a `u128` each: 16 bytes, aligned as Arrow asks).
    views: Vec<u128>,
    value_valid: Validity,
    buffers: Vec<DataBuffer>,
    keys: Vec<u8>,
    key_bounds: Vec<i64>,
    key_valid: Validity,
    /// Arrow list offsets of the headers map (int32, as `MapArray` requires).
    header_offsets: Vec<i32>,
    header_names: Vec<u8>,
    name_bounds: Vec<i64>,
    header_values: Vec<u8>,
    header_value_bounds: Vec<i64>,
}

impl Columns {
    fn new(count: usize) -> Self {
        let mut key_bounds = Vec::with_capacity(count + 1);
        key_bounds.push(0);
        let mut header_offsets = Vec::with_capacity(count + 1);
        header_offsets.push(0);
        Columns {
            offsets: Vec::with_capacity(count),
            timestamps: Vec::with_capacity(count),
            views: Vec::with_capacity(count),
            value_valid: Validity::new(count),
            buffers: Vec::new(),
            keys: Vec::new(),
            key_bounds,
            key_valid: Validity::new(count),
            header_offsets,
            header_names: Vec::new(),
            name_bounds: vec![0],
            header_values: Vec::new(),
            header_value_bounds: vec![0],
        }
    }

    /// The index of the data buffer that holds `start..end` of `map`, and the position of
    /// `start` in it; extends the last buffer when it can, else starts another.
    fn locate(&mut self, map: &ChunkBytes, start: usize, end: usize) -> (usize, usize) {
        let count = self.buffers.len();
        if let Some(last) = self.buffers.last_mut() {
            if same_bytes(&last.map, map) && start >= last.start && end - last.start <= BUFFER_SPAN_MAX {
                last.end = last.end.max(end);
                return (count - 1, start - last.start);
            }
        }
        self.buffers.push(DataBuffer { map: map.clone(), start, end });
        (self.buffers.len() - 1, 0)
    }

    /// The data buffer of a batch's value blob `blob` (positions in `map`), located on
    /// first use, and what turns a value's position in `map` into its offset in that buffer.
    fn locate_blob(
        &mut self,
        map: &ChunkBytes,
        blob: (usize, usize),
        located: &mut Option<(usize, isize)>,
    ) -> (usize, isize) {
        *located.get_or_insert_with(|| {
            let (index, first) = self.locate(map, blob.0, blob.1);
            (index, first as isize - blob.0 as isize)
        })
    }

    /// The view of a value at `at` in `map`, when its buffer is not known yet.
    fn view_located(&mut self, map: &ChunkBytes, at: usize, value: &[u8]) -> u128 {
        if value.len() <= INLINE_MAX {
            return inline_view(value);
        }
        let (index, offset) = self.locate(map, at, at + value.len());
        long_view(value, index, offset)
    }

    /// Adds the records of `chunk`.
    fn add(&mut self, chunk: &ReadChunk, partition: u32) -> Result<(), String> {
        let batch = chunk.batch();
        let bytes = batch.bytes();
        let base = bytes.as_ptr() as usize;
        // The batch's values are back to back: one data buffer holds them all, located
        // once (at the first value too long for its view: a batch of short values keeps no
        // buffer, nor its mapping); a value's offset in it is then its distance from the
        // blob's start. (A blob too large for i32 view offsets is located value by value.)
        let blob = batch.values_range();
        let blob = (chunk.start + blob.start, chunk.start + blob.end);
        let fits = blob.1 - blob.0 <= BUFFER_SPAN_MAX;
        let mut located = None;
        let header = batch.header;
        if fits && header.attributes & ATTR_UNIFORM != 0 {
            // Values of one size, one timestamp, no keys or headers (a NumPy record array's
            // rows): every view follows from its row number.
            let len = header.values_len as usize / header.record_count as usize;
            let (index, shift) =
                if len > INLINE_MAX { self.locate_blob(&chunk.map, blob, &mut located) } else { (0, 0) };
            let values = &bytes[batch.values_range()];
            let rows = chunk.skip..chunk.skip + chunk.count;
            let first_row = self.offsets.len();
            self.offsets.extend(rows.clone().map(|i| (header.base_offset + i as u64) as i64));
            self.timestamps.extend(rows.clone().map(|_| header.first_timestamp));
            self.views.extend(rows.map(|i| {
                let value = &values[i * len..(i + 1) * len];
                if len <= INLINE_MAX {
                    inline_view(value)
                } else {
                    long_view(value, index, (blob.0 as isize + (i * len) as isize + shift) as usize)
                }
            }));
            self.key_valid.set_nulls(first_row..self.offsets.len());
            self.key_bounds.resize(self.offsets.len() + 1, self.keys.len() as i64);
            let entries = *self.header_offsets.last().expect("starts with 0");
            self.header_offsets.resize(self.offsets.len() + 1, entries);
            return Ok(());
        }
        if fits && header.attributes & ATTR_COMPACT != 0 {
            // Values only (no keys, headers or tombstones), offsets dense: each record is its
            // 8-byte entry, read without walking the record iterator.
            let values = batch.values_range();
            let mut at = values.start + (0..chunk.skip).map(|i| batch.value_len(i) as usize).sum::<usize>();
            let first_row = self.offsets.len();
            let mut prefixes: Vec<(usize, usize)> = Vec::with_capacity(chunk.count);
            for i in chunk.skip..chunk.skip + chunk.count {
                let (offset, timestamp) = batch.offset_and_timestamp(i).expect("an uncompressed view");
                let len = batch.value_len(i) as usize;
                self.offsets.push(offset as i64);
                self.timestamps.push(timestamp);
                let view = if len <= INLINE_MAX {
                    inline_view(&bytes[at..at + len])
                } else {
                    prefixes.push((self.views.len(), at));
                    let (index, shift) = self.locate_blob(&chunk.map, blob, &mut located);
                    unprefixed_view(len, index, ((chunk.start + at) as isize + shift) as usize)
                };
                self.views.push(view);
                at += len;
            }
            for (row, at) in prefixes {
                let prefix = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
                self.views[row] |= u128::from(prefix) << 32;
            }
            self.key_valid.set_nulls(first_row..self.offsets.len());
            self.key_bounds.resize(self.offsets.len() + 1, self.keys.len() as i64);
            let entries = *self.header_offsets.last().expect("starts with 0");
            self.header_offsets.resize(self.offsets.len() + 1, entries);
            return Ok(());
        }
        // Rows of long values and where each value lies in the batch: their prefixes are
        // read after the loop, in a pass of independent loads (read in the loop, each one
        // waited on its value's cache line: the largest cost in perf for 100-byte values).
        let mut prefixes: Vec<(usize, usize)> = Vec::with_capacity(chunk.count);
        for r in chunk.records() {
            let row = self.offsets.len();
            self.offsets.push(r.offset as i64);
            self.timestamps.push(r.timestamp);
            if r.value.len() > BUFFER_SPAN_MAX {
                return Err(format!("value at offset {} is larger than Arrow views allow", r.offset));
            }
            let view = if r.tombstone {
                self.value_valid.set_null(row);
                0
            } else if r.value.len() <= INLINE_MAX {
                inline_view(r.value)
            } else {
                let at = chunk.start + (r.value.as_ptr() as usize - base);
                if fits {
                    prefixes.push((row, at - chunk.start));
                    let (index, shift) = self.locate_blob(&chunk.map, blob, &mut located);
                    unprefixed_view(r.value.len(), index, (at as isize + shift) as usize)
                } else {
                    self.view_located(&chunk.map, at, r.value)
                }
            };
            self.views.push(view);
            match r.key {
                Some(key) => self.keys.extend_from_slice(key),
                None => self.key_valid.set_null(row),
            }
            self.key_bounds.push(self.keys.len() as i64);
            if !r.headers.is_empty() {
                let decoded = headers::decode(r.headers).ok_or_else(|| {
                    format!("malformed headers at offset {} of partition {partition}", r.offset)
                })?;
                for (name, value) in decoded {
                    self.header_names.extend_from_slice(name.as_bytes());
                    self.name_bounds.push(self.header_names.len() as i64);
                    self.header_values.extend_from_slice(&value);
                    self.header_value_bounds.push(self.header_values.len() as i64);
                }
            }
            let entries = i32::try_from(self.name_bounds.len() - 1)
                .map_err(|_| "more than 2**31 headers in one Arrow batch".to_owned())?;
            self.header_offsets.push(entries);
        }
        for (row, at) in prefixes {
            let prefix = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
            self.views[row] |= u128::from(prefix) << 32;
        }
        Ok(())
    }

    fn build(records: &Records, partition: u32) -> Result<Self, String> {
        let mut columns = Columns::new(records.len());
        records.chunks.iter().try_for_each(|chunk| columns.add(chunk, partition))?;
        Ok(columns)
    }

    /// The arrays of the batch as a struct array whose children are the columns of
    /// `tidelog.arrow.schema()`, in its order and with its types' buffer layouts; the
    /// columns own every buffer and keep the values' mappings alive.
    fn export(self) -> Exported {
        let n = self.offsets.len();
        let columns = Arc::new(self);
        let c = &*columns;
        let leaf = |null_count: usize, buffers: Vec<*const u8>| Node {
            length: n,
            null_count,
            buffers,
            children: vec![],
        };
        let mut value_buffers = vec![c.value_valid.address(), c.views.as_ptr().cast::<u8>()];
        value_buffers.extend(c.buffers.iter().map(|b| b.bytes().as_ptr()));
        // The C data interface's last buffer of a view array: the data buffers' sizes.
        let sizes: Vec<i64> = c.buffers.iter().map(|b| (b.end - b.start) as i64).collect();
        value_buffers.push(sizes.as_ptr().cast::<u8>());
        let entries = c.name_bounds.len() - 1;
        let entry = |bounds: &Vec<i64>, data: &Vec<u8>| Node {
            length: entries,
            null_count: 0,
            buffers: vec![std::ptr::null(), bounds.as_ptr().cast::<u8>(), data.as_ptr()],
            children: vec![],
        };
        let headers = Node {
            length: n,
            null_count: 0,
            buffers: vec![std::ptr::null(), c.header_offsets.as_ptr().cast::<u8>()],
            children: vec![Node {
                length: entries,
                null_count: 0,
                buffers: vec![std::ptr::null()],
                children: vec![
                    entry(&c.name_bounds, &c.header_names),
                    entry(&c.header_value_bounds, &c.header_values),
                ],
            }],
        };
        let root = Node {
            length: n,
            null_count: 0,
            buffers: vec![std::ptr::null()],
            children: vec![
                leaf(0, vec![std::ptr::null(), c.offsets.as_ptr().cast::<u8>()]),
                leaf(0, vec![std::ptr::null(), c.timestamps.as_ptr().cast::<u8>()]),
                leaf(
                    c.key_valid.nulls,
                    vec![c.key_valid.address(), c.key_bounds.as_ptr().cast::<u8>(), c.keys.as_ptr()],
                ),
                leaf(c.value_valid.nulls, value_buffers),
                headers,
            ],
        };
        Exported::new(root, Arc::new((columns, sizes)))
    }

    fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        let buffers = PyList::empty(py);
        for b in self.buffers {
            let view = ValueBuffer::new(b.map, b.start, b.end).expect("values lie in their validated chunk");
            buffers.append(PyMemoryView::from(&Bound::new(py, view)?.into_any())?)?;
        }
        let views: Vec<u8> = self.views.iter().flat_map(|v| v.to_le_bytes()).collect();
        PyTuple::new(
            py,
            [
                PyArray1::from_vec(py, self.offsets).into_any(),
                PyArray1::from_vec(py, self.timestamps).into_any(),
                PyArray1::from_vec(py, views).into_any(),
                self.value_valid.into_py(py),
                buffers.into_any(),
                PyArray1::from_vec(py, self.keys).into_any(),
                PyArray1::from_vec(py, self.key_bounds).into_any(),
                self.key_valid.into_py(py),
                PyArray1::from_vec(py, self.header_offsets).into_any(),
                PyArray1::from_vec(py, self.header_names).into_any(),
                PyArray1::from_vec(py, self.name_bounds).into_any(),
                PyArray1::from_vec(py, self.header_values).into_any(),
                PyArray1::from_vec(py, self.header_value_bounds).into_any(),
            ],
        )
    }
}

/// The view of a value of at most [`INLINE_MAX`] bytes: its length, then the value.
fn inline_view(value: &[u8]) -> u128 {
    let mut view = [0u8; VIEW_BYTES];
    view[..4].copy_from_slice(&(value.len() as i32).to_le_bytes());
    view[4..4 + value.len()].copy_from_slice(value);
    u128::from_le_bytes(view)
}

/// The view of a longer value: length, first 4 bytes, data buffer index, offset in it.
fn long_view(value: &[u8], index: usize, offset: usize) -> u128 {
    let prefix = u32::from_le_bytes(value[..4].try_into().expect("longer than 12 bytes"));
    unprefixed_view(value.len(), index, offset) | (u128::from(prefix) << 32)
}

/// [`long_view`] with the prefix bytes left zero, for the caller to fill in.
fn unprefixed_view(len: usize, index: usize, offset: usize) -> u128 {
    (len as u128) | ((index as u128) << 64) | ((offset as u128) << 96)
}

/// The columns of `records`: `(offsets, timestamps, value_views, value_validity,
/// value_buffers, keys, key_bounds, key_validity, header_offsets, header_names,
/// name_bounds, header_values, header_value_bounds)`; see `RecordBatch.arrow_columns`.
pub(super) fn columns<'py>(
    py: Python<'py>,
    records: &Records,
    partition: u32,
) -> PyResult<Bound<'py, PyTuple>> {
    let columns = py.detach(|| Columns::build(records, partition)).map_err(CorruptRecordError::new_err)?;
    columns.into_py(py)
}

/// `(pyarrow module, pyarrow.RecordBatch._import_from_c, tidelog.arrow.schema())`, looked
/// up on the first `to_arrow()`.
static PYARROW: PyOnceLock<(Py<PyAny>, Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();
/// `sys.modules`.
static MODULES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `records` as a `pyarrow.RecordBatch` with the columns of `tidelog.arrow.schema()`.
pub(super) fn to_arrow<'py>(
    py: Python<'py>,
    records: &Records,
    partition: u32,
) -> PyResult<Bound<'py, PyAny>> {
    // The cache holds while `sys.modules` still names the same pyarrow: pyarrow made
    // unimportable since the first call (as tests do) must still give the error that says
    // what to install. (A dict lookup: `import pyarrow` costs a microsecond a call.)
    let modules = MODULES.get_or_try_init(py, || py.import("sys")?.getattr("modules").map(Bound::unbind))?;
    let module = modules.bind(py).get_item("pyarrow").ok();
    let cached = PYARROW.get(py).filter(|(m, _, _)| module.as_ref().is_some_and(|now| now.is(m)));
    let (import, schema) = match cached {
        Some((_, import, schema)) => (import.bind(py).clone(), schema.bind(py).clone()),
        None => {
            let found = py.import("tidelog.arrow")?.call_method0("_c_importer")?;
            let (module, schema) = found.extract::<(Bound<'py, PyAny>, Py<PyAny>)>()?;
            // pyarrow's entry point for the C data interface, taking a `pyarrow.Schema` (the
            // PyCapsule protocol would import a schema exported anew on every call).
            let import = module.getattr("RecordBatch")?.getattr("_import_from_c")?.unbind();
            let module = module.unbind();
            let bound = (import.bind(py).clone(), schema.bind(py).clone());
            let _ = PYARROW.set(py, (module, import, schema));
            bound
        }
    };
    let columns = py.detach(|| Columns::build(records, partition)).map_err(CorruptRecordError::new_err)?;
    let mut exported = columns.export();
    // pyarrow moves the tree out of the struct (and releases it on failure); whatever is
    // left is released when `exported` drops.
    import.call1((exported.address(), schema))
}
