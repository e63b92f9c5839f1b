//! The columns of a `RecordBatch` laid out as Apache Arrow arrays want them, for
//! `tidelog.arrow` to wrap with pyarrow (`RecordBatch.to_arrow()`, `Topic.to_arrow()`).
//!
//! The value column is an Arrow `binary_view` array: one 16-byte view per value, pointing
//! into data buffers that are [`ValueBuffer`]s over the mapped segment (or over a compressed
//! batch's decompressed image). No value is copied, however many stored batches the
//! records come from: a view names its buffer and the value's position in it, so the batch
//! headers, keys and headers lying between two batches' values cost nothing. Values of at
//! most 12 bytes are inlined in their view, as the Arrow format requires. Keys, headers,
//! offsets and timestamps are gathered into new buffers in the same pass, without the GIL.

use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyMemoryView, PyTuple};
use tidelog_core::format::headers;
use tidelog_core::log::{ChunkBytes, ReadChunk};

use super::Records;
use crate::errors::CorruptRecordError;
use crate::view::ValueBuffer;

/// Bytes of an Arrow view.
const VIEW_BYTES: usize = 16;
/// Longest value stored inside its view rather than in a data buffer.
const INLINE_MAX: usize = 12;
/// A view's offset into its data buffer is an `i32`: a buffer spans at most this much.
const BUFFER_SPAN_MAX: usize = i32::MAX as usize;

/// An Arrow validity bitmap (bit `i % 8` of byte `i / 8`, 1 = valid).
struct Validity {
    bits: Vec<u8>,
    len: usize,
    nulls: usize,
}

impl Validity {
    fn new(capacity: usize) -> Self {
        Validity { bits: Vec::with_capacity(capacity.div_ceil(8)), len: 0, nulls: 0 }
    }

    fn push(&mut self, valid: bool) {
        if self.len % 8 == 0 {
            self.bits.push(0);
        }
        if valid {
            self.bits[self.len / 8] |= 1 << (self.len % 8);
        } else {
            self.nulls += 1;
        }
        self.len += 1;
    }

    /// The bitmap, or None when nothing is null (Arrow's way of saying "all valid").
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

fn same_bytes(a: &ChunkBytes, b: &ChunkBytes) -> bool {
    match (a, b) {
        (ChunkBytes::Mapped(x), ChunkBytes::Mapped(y)) => std::sync::Arc::ptr_eq(x, y),
        (ChunkBytes::Image(x), ChunkBytes::Image(y)) => std::sync::Arc::ptr_eq(x, y),
        _ => false,
    }
}

/// Every column of a record batch, built in one pass over its chunks.
struct Columns {
    offsets: Vec<i64>,
    timestamps: Vec<i64>,
    views: Vec<u8>,
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
            views: Vec::with_capacity(count * VIEW_BYTES),
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

    /// The index of the data buffer that holds `start..end` of `map`, and the value's
    /// offset in it; extends the last buffer when it can, else starts another.
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

    fn push_value(&mut self, map: &ChunkBytes, at: usize, value: &[u8]) {
        let len = value.len();
        let mut view = [0u8; VIEW_BYTES];
        view[..4].copy_from_slice(&(len as i32).to_le_bytes());
        if len <= INLINE_MAX {
            view[4..4 + len].copy_from_slice(value);
        } else {
            let (index, offset) = self.locate(map, at, at + len);
            view[4..8].copy_from_slice(&value[..4]);
            view[8..12].copy_from_slice(&(index as i32).to_le_bytes());
            view[12..16].copy_from_slice(&(offset as i32).to_le_bytes());
        }
        self.views.extend_from_slice(&view);
    }

    /// Adds the records of `chunk`.
    fn add(&mut self, chunk: &ReadChunk, partition: u32) -> Result<(), String> {
        let batch = chunk.map.read(chunk.start, chunk.end).expect("chunk lies in published data");
        let base = batch.as_ptr() as usize;
        for r in chunk.records() {
            self.offsets.push(r.offset as i64);
            self.timestamps.push(r.timestamp);
            if r.value.len() > BUFFER_SPAN_MAX {
                return Err(format!("value at offset {} is larger than Arrow views allow", r.offset));
            }
            self.value_valid.push(!r.tombstone);
            if r.tombstone {
                self.views.extend_from_slice(&[0; VIEW_BYTES]);
            } else {
                let at = chunk.start + (r.value.as_ptr() as usize - base);
                self.push_value(&chunk.map, at, r.value);
            }
            self.key_valid.push(r.key.is_some());
            self.keys.extend_from_slice(r.key.unwrap_or_default());
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
        Ok(())
    }

    fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        let buffers = PyList::empty(py);
        for b in self.buffers {
            let view = ValueBuffer::new(b.map, b.start, b.end).expect("values lie in their validated chunk");
            buffers.append(PyMemoryView::from(&Bound::new(py, view)?.into_any())?)?;
        }
        PyTuple::new(
            py,
            [
                PyArray1::from_vec(py, self.offsets).into_any(),
                PyArray1::from_vec(py, self.timestamps).into_any(),
                PyArray1::from_vec(py, self.views).into_any(),
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

/// The columns of `records`: `(offsets, timestamps, value_views, value_validity,
/// value_buffers, keys, key_bounds, key_validity, header_offsets, header_names,
/// name_bounds, header_values, header_value_bounds)`; see `RecordBatch.arrow_columns`.
pub(super) fn columns<'py>(
    py: Python<'py>,
    records: &Records,
    partition: u32,
) -> PyResult<Bound<'py, PyTuple>> {
    let chunks = records.chunks.as_slice();
    let columns = py
        .detach(|| {
            let mut columns = Columns::new(records.len());
            chunks.iter().try_for_each(|chunk| columns.add(chunk, partition))?;
            Ok::<_, String>(columns)
        })
        .map_err(CorruptRecordError::new_err)?;
    columns.into_py(py)
}
