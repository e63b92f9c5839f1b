//! `inspect_segment`, `segment_files` and `recovery_events`: offline views of a partition's
//! files for the CLI's `dump` and `verify` and for `Store.stats()`.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use tidelog_core::format::{headers, BatchView, Compression};
use tidelog_core::inspect;

use crate::gil::run_detached;

/// Walks every batch of one segment data file and checks CRCs, offsets and indexes.
///
/// Returns a dict: `path`, `base_offset`, `file_len`, `valid_end`, `index_entries`,
/// `torn_tail` (the problems are what a crash mid-append leaves: nothing intact after them),
/// `batches` (a list of dicts with the header fields, `compression` (`"none"`, `"lz4"`,
/// `"zstd"`, or None for unknown codec bits) and `crc_ok`; with `records=True` each
/// also has `records`, a list of dicts with `offset`, `timestamp_ms`, `key`, `value`,
/// `headers`), and `problems` (dicts with `path`, `position`, `offset`, `reason`).
#[pyfunction]
#[pyo3(signature = (path, *, records=false))]
pub fn inspect_segment<'py>(py: Python<'py>, path: PathBuf, records: bool) -> PyResult<Bound<'py, PyDict>> {
    let (report, bytes) = run_detached(py, || {
        let report = inspect::inspect_segment(&path)?;
        let bytes = if records {
            Some(std::fs::read(&path).map_err(|e| tidelog_core::Error::io("read", &path, e))?)
        } else {
            None
        };
        Ok((report, bytes))
    })?;
    let out = PyDict::new(py);
    out.set_item("path", report.path.to_string_lossy())?;
    out.set_item("base_offset", report.base_offset)?;
    out.set_item("file_len", report.file_len)?;
    out.set_item("valid_end", report.valid_end)?;
    out.set_item("index_entries", report.index_entries)?;
    out.set_item("torn_tail", report.torn_tail)?;
    let batches = PyList::empty(py);
    for b in &report.batches {
        let h = &b.header;
        let d = PyDict::new(py);
        d.set_item("position", b.position)?;
        d.set_item("base_offset", h.base_offset)?;
        d.set_item("last_offset", h.base_offset + u64::from(h.last_offset_delta))?;
        d.set_item("record_count", h.record_count)?;
        d.set_item("size", h.total_len)?;
        d.set_item("crc", h.crc)?;
        d.set_item("crc_ok", b.crc_ok)?;
        d.set_item("attributes", h.attributes)?;
        d.set_item("compression", Compression::of(h.attributes).map(Compression::name))?;
        d.set_item("first_timestamp_ms", h.first_timestamp)?;
        d.set_item("max_timestamp_ms", h.max_timestamp)?;
        d.set_item("producer_id", h.producer_id)?;
        d.set_item("producer_epoch", h.producer_epoch)?;
        d.set_item("base_sequence", h.base_sequence)?;
        if let Some(bytes) = &bytes {
            let list = PyList::empty(py);
            let stored = BatchView::parse(&bytes[b.position as usize..], false);
            // A compressed batch's records are read from its image; one that does not
            // decompress lists none (verify reports it).
            let image =
                stored.ok().filter(|v| v.codec() != Compression::None).and_then(|v| v.decompress().ok());
            let view = match &image {
                Some(image) => BatchView::parse(image, false),
                None => stored
                    .ok()
                    .filter(|v| v.codec() == Compression::None)
                    .ok_or("unreadable compressed batch"),
            };
            if let Ok(view) = view {
                for r in view.records() {
                    let rec = PyDict::new(py);
                    rec.set_item("offset", r.offset)?;
                    rec.set_item("timestamp_ms", r.timestamp)?;
                    rec.set_item("key", r.key.map(|k| PyBytes::new(py, k)))?;
                    rec.set_item("value", (!r.tombstone).then(|| PyBytes::new(py, r.value)))?;
                    let hs = PyDict::new(py);
                    for (name, value) in headers::decode(r.headers).unwrap_or_default() {
                        hs.set_item(name, PyBytes::new(py, &value))?;
                    }
                    rec.set_item("headers", hs)?;
                    list.append(rec)?;
                }
            }
            d.set_item("records", list)?;
        }
        batches.append(d)?;
    }
    out.set_item("batches", batches)?;
    let problems = PyList::empty(py);
    for p in &report.problems {
        let d = PyDict::new(py);
        d.set_item("path", p.path.to_string_lossy())?;
        d.set_item("position", p.position)?;
        d.set_item("offset", p.offset)?;
        d.set_item("reason", &p.reason)?;
        problems.append(d)?;
    }
    out.set_item("problems", problems)?;
    Ok(out)
}

/// The segment data files of a partition directory, in offset order.
#[pyfunction]
pub fn segment_files(py: Python<'_>, partition_dir: PathBuf) -> PyResult<Vec<PathBuf>> {
    run_detached(py, || inspect::segment_files(&partition_dir))
}

/// What recovery removed from the partition in `partition_dir`, oldest first: dicts with
/// `kind` ("torn_tail", "quarantined" or "unsynced"), `time_ms`, `segment_base`,
/// `position`, `bytes`, `first_offset`, `end_offset` (offsets `first_offset..end_offset`
/// were removed, as far as the removed bytes tell) and `path` (the quarantine file, or
/// None for a torn tail).
#[pyfunction]
pub fn recovery_events<'py>(py: Python<'py>, partition_dir: PathBuf) -> PyResult<Bound<'py, PyList>> {
    let events = run_detached(py, || tidelog_core::log::lost::read_events(&partition_dir))?;
    let out = PyList::empty(py);
    for e in events {
        let d = PyDict::new(py);
        d.set_item("kind", e.kind.name())?;
        d.set_item("time_ms", e.time_ms)?;
        d.set_item("segment_base", e.segment_base)?;
        d.set_item("position", e.position)?;
        d.set_item("bytes", e.bytes)?;
        d.set_item("first_offset", e.first_offset)?;
        d.set_item("end_offset", e.end_offset)?;
        let path = (!e.file.is_empty())
            .then(|| partition_dir.join(tidelog_core::log::lost::QUARANTINE_DIR).join(&e.file));
        d.set_item("path", path.map(|p| p.to_string_lossy().into_owned()))?;
        out.append(d)?;
    }
    Ok(out)
}
