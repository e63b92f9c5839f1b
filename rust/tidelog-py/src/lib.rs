//! `tidelog._core`: the Python bindings of the storage engine. This module only registers
//! classes and exceptions; each binding lives in its own file.

mod aio_send;
mod allocator;
mod args;
mod arrow_ffi;
mod commit;
mod done;
mod doorbell;
mod errors;
mod fastcall;
mod faults;
mod gil;
mod group;
mod hot_methods;
mod inspect;
mod jobs;
mod kafka;
mod kafka_message;
mod kafka_send;
mod message;
mod metrics;
mod paths;
mod producer;
mod ring;
mod statelog;
mod store;
mod topic;
mod unguarded;
mod view;
mod waker;

use pyo3::prelude::*;

/// Every Rust allocation of the module. A buffered message is allocated by the sending
/// thread and freed by the producer's writer thread; glibc's malloc serves such a pattern
/// from its slow path (`_int_malloc` was 11% of the CPU of a task doing `await send`), where
/// mimalloc frees into the owning thread's page (measured side by side: `send` 4.98 -> 6.27 M
/// msgs/s, `await send` 4.38 -> 5.22 M/s, `benches/python/test_aio_bench.py -k send`).
#[global_allocator]
static GLOBAL: allocator::Allocator = allocator::Allocator;

/// The partition Kafka's default partitioner (and `Topic.append`) picks for `key`.
#[pyfunction]
fn partition_for_key(key: &[u8], partitions: &Bound<'_, PyAny>) -> PyResult<u32> {
    let partitions = args::int_in(partitions, "partitions", 1, u32::MAX)?;
    Ok(tidelog_core::partitioner::partition_for_key(key, partitions))
}

/// The native core of tidelog.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<store::PyStore>()?;
    m.add_class::<topic::PyTopic>()?;
    m.add_class::<message::Message>()?;
    m.add_class::<producer::PyProducer>()?;
    m.add_class::<aio_send::PyAsyncProducer>()?;
    done::register(m)?;
    m.add_class::<ring::PyRing>()?;
    m.add_class::<message::RecordBatch>()?;
    m.add_class::<message::RecordBatchIter>()?;
    m.add_class::<message::MessageIterator>()?;
    m.add_class::<view::ValueBuffer>()?;
    m.add_class::<doorbell::PyDoorbell>()?;
    m.add_class::<waker::PyBell>()?;
    m.add_class::<waker::PyWaker>()?;
    m.add_class::<statelog::PyStateLog>()?;
    m.add_class::<commit::PyOffsetCommitter>()?;
    m.add_class::<commit::PyOffsetTable>()?;
    m.add_class::<jobs::Job>()?;
    m.add_class::<jobs::JobBatch>()?;
    m.add_class::<jobs::JobBuffer>()?;
    jobs::install(m)?;
    m.add_class::<group::PyGroup>()?;
    m.add_function(wrap_pyfunction!(inspect::inspect_segment, m)?)?;
    m.add_class::<kafka::PyKafkaTransactionalId>()?;
    m.add_function(wrap_pyfunction!(kafka::kafka_append, m)?)?;
    m.add_function(wrap_pyfunction!(kafka::kafka_read, m)?)?;
    m.add_function(wrap_pyfunction!(kafka::kafka_producer_id, m)?)?;
    kafka_message::register(m)?;
    m.add_class::<kafka_send::KafkaSender>()?;
    kafka_send::install(m)?;
    hot_methods::install(m)?;
    m.add_function(wrap_pyfunction!(kafka_message::kafka_message, m)?)?;
    m.add_function(wrap_pyfunction!(kafka_message::kafka_messages, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::segment_files, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::recovery_events, m)?)?;
    // The kinds `recovery_events` and `partition_metrics` report, in code order.
    m.add(
        "RECOVERY_KINDS",
        pyo3::types::PyTuple::new(m.py(), tidelog_core::log::lost::LossKind::ALL.map(|k| k.name()))?,
    )?;
    m.add_function(wrap_pyfunction!(partition_for_key, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::partition_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::timestamps_at, m)?)?;
    m.add_function(wrap_pyfunction!(statelog::read_state_log, m)?)?;
    m.add_function(wrap_pyfunction!(group::read_group, m)?)?;
    m.add_function(wrap_pyfunction!(group::list_groups, m)?)?;
    faults::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    paths::register(m)?;
    Ok(())
}
