//! The store's layout and defaults, from the core (`tidelog_core::paths`,
//! `tidelog_core::defaults`), so the Python layer never spells a name or a default itself.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tidelog_core::defaults::{self, DefaultValue};
use tidelog_core::paths;

use tidelog_core::statelog::StatePaths;

use crate::args;
use crate::errors::to_py;
use crate::gil::run_detached;

/// `<store>/topics`: the directory of the topics.
#[pyfunction]
fn topics_dir(store: PathBuf) -> PathBuf {
    paths::topics_dir(&store)
}

/// `<store>/topics/<topic>`: the directory of `topic`.
#[pyfunction]
fn topic_dir(store: PathBuf, topic: &str) -> PathBuf {
    paths::topic_dir(&store, topic)
}

/// `<store>/topics/<topic>/<partition>`: the directory of one partition.
#[pyfunction]
fn partition_dir(store: PathBuf, topic: &str, partition: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    let partition = args::int_in(partition, "partition", 0, u32::MAX)?;
    Ok(paths::partition_dir(&store, topic, partition))
}

/// `<store>/work_queues/<topic>`: the state of `topic`'s work queues.
#[pyfunction]
fn work_queues_dir(store: PathBuf, topic: &str) -> PathBuf {
    paths::work_queues_dir(&store, topic)
}

/// The name a group's or work queue's state files carry: the name itself when it is a
/// plain file name, else `~` and its UTF-8 bytes in hex.
#[pyfunction]
fn state_log_name(name: &str) -> String {
    tidelog_core::group::file_name(name)
}

/// The files `(lock, snapshot, journal)` of the state log `name` in `directory`.
#[pyfunction]
fn state_log_files(directory: PathBuf, name: &str) -> PyResult<(PathBuf, PathBuf, PathBuf)> {
    let files = to_py(StatePaths::new(&directory, name))?;
    Ok((files.lock, files.snapshot, files.journal))
}

/// Every `(topic, group)` with a work queue in the store, sorted.
#[pyfunction]
fn list_work_queues(py: Python<'_>, store: PathBuf) -> PyResult<Vec<(String, String)>> {
    run_detached(py, move || tidelog_core::group::list_under(&store.join(paths::WORK_QUEUES_DIR)))
}

/// `<store>/producers`: the state of named producers.
#[pyfunction]
fn producers_dir(store: PathBuf) -> PathBuf {
    paths::producers_dir(&store)
}

/// Registers the functions, the names Python needs and `DEFAULTS` on the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(topics_dir, m)?)?;
    m.add_function(wrap_pyfunction!(topic_dir, m)?)?;
    m.add_function(wrap_pyfunction!(partition_dir, m)?)?;
    m.add_function(wrap_pyfunction!(work_queues_dir, m)?)?;
    m.add_function(wrap_pyfunction!(producers_dir, m)?)?;
    m.add_function(wrap_pyfunction!(state_log_name, m)?)?;
    m.add_function(wrap_pyfunction!(state_log_files, m)?)?;
    m.add_function(wrap_pyfunction!(list_work_queues, m)?)?;
    m.add("OFFSETS_TOPIC", paths::OFFSETS_TOPIC)?;
    m.add("LEGACY_WORK_QUEUES_TOPIC", paths::LEGACY_WORK_QUEUES_TOPIC)?;
    m.add("INTERNAL_PREFIX", paths::INTERNAL_PREFIX)?;
    m.add("DOORBELL_FILE", paths::DOORBELL_FILE)?;
    m.add("TOPIC_META_FILE", paths::TOPIC_META_FILE)?;
    m.add("TXN_SUFFIX", paths::TXN_SUFFIX)?;
    m.add("SEGMENT_DATA_SUFFIX", format!(".{}", paths::SEGMENT_DATA_EXTENSION))?;
    m.add("TXN_LOCK_SUFFIX", paths::TXN_LOCK_SUFFIX)?;
    m.add("DEFAULTS", mapping(m.py(), defaults::all())?)?;
    m.add("PRODUCER_DEFAULTS", mapping(m.py(), defaults::producer())?)?;
    m.add("WAIT_DEFAULTS", mapping(m.py(), defaults::waiting())?)?;
    m.add("MAX_SPIN_US", defaults::MAX_SPIN_US)?;
    Ok(())
}

/// `defaults` as a read-only mapping: the core's defaults are not Python's to change.
fn mapping<'py>(py: Python<'py>, defaults: Vec<(&'static str, DefaultValue)>) -> PyResult<Bound<'py, PyAny>> {
    let all = PyDict::new(py);
    for (name, value) in defaults {
        match value {
            DefaultValue::Int(n) => all.set_item(name, n)?,
            DefaultValue::Float(x) => all.set_item(name, x)?,
            DefaultValue::Text(s) => all.set_item(name, s)?,
            DefaultValue::None => all.set_item(name, py.None())?,
        }
    }
    py.import("types")?.getattr("MappingProxyType")?.call1((all,))
}
