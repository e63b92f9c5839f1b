//! The columns of a `RecordBatch` laid out as Apache Arrow arrays want them, for
//! `tidelog.arrow` to wrap with pyarrow (`RecordBatch.to_arrow()`, `Topic.to_arrow()`).
//!
//! A piece made of one stored batch exports the batch's value blob in place (a
//! [`ValueBuffer`] over the mapped segment, or over a compressed batch's decompressed
//! image) with 64-bit boundaries, as Arrow's `large_binary` takes them: the value column
//! then shares memory with the segment. Stored batches smaller than the caller's threshold
//! are joined into one copied piece instead, so a partition written one message at a time
//! does not turn into a table of one-row chunks. Keys, headers, offsets and timestamps are
//! gathered in one pass over the records, without the GIL's help per record.

use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView, PyTuple};
use tidelog_core::format::headers;
use tidelog_core::log::ReadChunk;

use super::Records;
use crate::errors::CorruptRecordError;
use crate::view::ValueBuffer;

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
        if self.len.is_multiple_of(8) {
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
    fn into_py(self, py: Python<'_>) -> Option<Bound<'_, PyBytes>> {
        (self.nulls > 0).then(|| PyBytes::new(py, &self.bits))
    }
}

/// Every column of a piece but the values' bytes.
struct Columns {
    offsets: Vec<i64>,
    timestamps: Vec<i64>,
    value_bounds: Vec<i64>,
    value_valid: Validity,
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
        Columns {
            offsets: Vec::with_capacity(count),
            timestamps: Vec::with_capacity(count),
            value_bounds: Self::bounds(count),
            value_valid: Validity::new(count),
            keys: Vec::new(),
            key_bounds: Self::bounds(count),
            key_valid: Validity::new(count),
            header_offsets: vec![0],
            header_names: Vec::new(),
            name_bounds: vec![0],
            header_values: Vec::new(),
            header_value_bounds: vec![0],
        }
    }

    fn bounds(count: usize) -> Vec<i64> {
        let mut v = Vec::with_capacity(count + 1);
        v.push(0);
        v
    }

    /// Adds the records of `chunk`; with `values`, their values' bytes are appended to it.
    fn add(&mut self, chunk: &ReadChunk, partition: u32, mut values: Option<&mut Vec<u8>>) -> Result<(), String> {
        let mut value_end = *self.value_bounds.last().expect("starts with 0");
        for r in chunk.records() {
            self.offsets.push(r.offset as i64);
            self.timestamps.push(r.timestamp);
            self.value_valid.push(!r.tombstone);
            if !r.tombstone {
                value_end += r.value.len() as i64;
                if let Some(out) = values.as_deref_mut() {
                    out.extend_from_slice(r.value);
                }
            }
            self.value_bounds.push(value_end);
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
                .map_err(|_| "more than 2**31 headers in one Arrow piece".to_owned())?;
            self.header_offsets.push(entries);
        }
        Ok(())
    }

    fn into_py<'py>(self, py: Python<'py>, values: Bound<'py, PyMemoryView>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(
            py,
            [
                PyArray1::from_vec(py, self.offsets).into_any(),
                PyArray1::from_vec(py, self.timestamps).into_any(),
                values.into_any(),
                PyArray1::from_vec(py, self.value_bounds).into_any(),
                self.value_valid.into_py(py).map_or_else(|| py.None().into_bound(py), Bound::into_any),
                PyBytes::new(py, &self.keys).into_any(),
                PyArray1::from_vec(py, self.key_bounds).into_any(),
                self.key_valid.into_py(py).map_or_else(|| py.None().into_bound(py), Bound::into_any),
                PyArray1::from_vec(py, self.header_offsets).into_any(),
                PyBytes::new(py, &self.header_names).into_any(),
                PyArray1::from_vec(py, self.name_bounds).into_any(),
                PyBytes::new(py, &self.header_values).into_any(),
                PyArray1::from_vec(py, self.header_value_bounds).into_any(),
            ],
        )
    }
}

/// A piece computed without the GIL, turned into Python objects with it.
enum Piece {
    /// Values `at..at + total` of the chunk's bytes, exported in place.
    Shared { columns: Columns, chunk: usize, at: usize, total: usize },
    /// Values copied into a new buffer.
    Copied { columns: Columns, values: Vec<u8> },
}

/// One stored batch whose values can be exported in place, or None if they are not one
/// contiguous run of the mapping (then the caller copies).
fn shared_piece(chunks: &[ReadChunk], i: usize, partition: u32) -> Result<Option<Piece>, String> {
    let chunk = &chunks[i];
    let mut columns = Columns::new(chunk.count);
    columns.add(chunk, partition, None)?;
    let total = *columns.value_bounds.last().expect("starts with 0") as usize;
    let batch = chunk.batch();
    let mut at = chunk.start + batch.values_range().start;
    at += (0..chunk.skip).map(|i| batch.value_len(i) as usize).sum::<usize>();
    // The bounds were summed from the records themselves: check that each value really
    // lies where they say in the blob, rather than trust the layout.
    let Some(base) = chunk.map.read(at, at + total).map(<[u8]>::as_ptr) else { return Ok(None) };
    for (j, r) in chunk.records().enumerate() {
        if !r.tombstone && r.value.as_ptr() as usize != base as usize + columns.value_bounds[j] as usize {
            return Ok(None);
        }
    }
    Ok(Some(Piece::Shared { columns, chunk: i, at, total }))
}

/// The records of `chunks` with their values copied into one new buffer.
fn copied_piece(chunks: &[ReadChunk], partition: u32) -> Result<Piece, String> {
    let count = chunks.iter().map(|c| c.count).sum();
    let mut columns = Columns::new(count);
    let mut values = Vec::new();
    for chunk in chunks {
        columns.add(chunk, partition, Some(&mut values))?;
    }
    Ok(Piece::Copied { columns, values })
}

/// Splits `chunks` into pieces (see [`pieces`]).
fn plan(chunks: &[ReadChunk], partition: u32, min_shared_bytes: Option<usize>) -> Result<Vec<Piece>, String> {
    let Some(min) = min_shared_bytes else {
        if chunks.len() == 1 {
            if let Some(piece) = shared_piece(chunks, 0, partition)? {
                return Ok(vec![piece]);
            }
        }
        return Ok(vec![copied_piece(chunks, partition)?]);
    };
    let mut out = Vec::new();
    let mut small_from = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        if chunk.batch().values_range().len() < min {
            continue;
        }
        if small_from < i {
            out.push(copied_piece(&chunks[small_from..i], partition)?);
        }
        match shared_piece(chunks, i, partition)? {
            Some(piece) => out.push(piece),
            None => out.push(copied_piece(std::slice::from_ref(chunk), partition)?),
        }
        small_from = i + 1;
    }
    if small_from < chunks.len() {
        out.push(copied_piece(&chunks[small_from..], partition)?);
    }
    Ok(out)
}

/// The pieces of `records`: tuples `(offsets, timestamps, values, value_bounds,
/// value_validity, keys, key_bounds, key_validity, header_offsets, header_names,
/// name_bounds, header_values, header_value_bounds)`.
///
/// With `min_shared_bytes` None there is exactly one piece, sharing the segment's memory
/// when the records come from one stored batch. Otherwise each stored batch with at least
/// that many bytes of values is a piece of its own, in place, and the runs of smaller ones
/// between them are joined into copied pieces.
pub(super) fn pieces<'py>(
    py: Python<'py>,
    records: &Records,
    partition: u32,
    min_shared_bytes: Option<usize>,
) -> PyResult<Vec<Bound<'py, PyTuple>>> {
    let chunks = records.chunks.as_slice();
    let planned = py.detach(|| plan(chunks, partition, min_shared_bytes)).map_err(CorruptRecordError::new_err)?;
    planned
        .into_iter()
        .map(|piece| match piece {
            Piece::Shared { columns, chunk, at, total } => {
                let view = ValueBuffer::new(chunks[chunk].map.clone(), at, at + total)
                    .expect("range checked when planned");
                let values = PyMemoryView::from(&Bound::new(py, view)?.into_any())?;
                columns.into_py(py, values)
            }
            Piece::Copied { columns, values } => {
                let values = PyMemoryView::from(&PyBytes::new(py, &values).into_any())?;
                columns.into_py(py, values)
            }
        })
        .collect()
}
