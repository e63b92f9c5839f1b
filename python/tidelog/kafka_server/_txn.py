"""Transactions over the Kafka protocol, as the store's named producers' transactions.

A Kafka ``transactional.id`` is a named producer of the store (``_core.KafkaTransactionalId``,
the core's producer identity): ``InitProducerId`` claims the name (the epoch goes up, an older
instance is fenced, a transaction it left open is finished), ``AddPartitionsToTxn`` records
the partitions durably before anything is written to them, the client's produce batches
carry the producer id and epoch with the transactional flag, ``TxnOffsetCommit`` writes the
group's commit records into the same transaction (the ``__consumer_offsets`` partition of the
group), and ``EndTxn`` decides and writes the markers. ``read_committed`` fetches stop at the
first open transaction and pass over aborted ones, as every reader of the store does.

A transaction still open ``transaction.timeout.ms`` after it started (its first
AddPartitionsToTxn or AddOffsetsToTxn) is ended by the server as Kafka's coordinator ends
it: the transactional id is claimed again, which bumps the epoch (fencing the producer that
left it open: its next request is refused as fenced) and aborts the transaction, so
``read_committed`` readers move past it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidelog import _core
from tidelog.kafka_server import _errors

if TYPE_CHECKING:
    from tidelog.kafka_server._broker import Broker, Handler

__all__ = ["HANDLERS", "MAX_TIMEOUT_MS", "fenced_batches", "init", "known", "transaction_for"]

log = logging.getLogger("tidelog.kafka_server")

INVALID_PRODUCER_ID_MAPPING = 49
INVALID_TXN_STATE = 48
#: The longest ``transaction.timeout.ms`` accepted (Kafka's ``transaction.max.timeout.ms``).
MAX_TIMEOUT_MS = 900_000


@dataclass
class _Txn:
    """A transactional id's current instance and its open transaction's partitions."""

    native: _core.KafkaTransactionalId
    partitions: set[tuple[str, int]] = field(default_factory=set)
    #: Next sequence per internal partition this server writes for the producer.
    sequences: dict[tuple[str, int], int] = field(default_factory=dict)
    #: The producer's ``transaction.timeout.ms``.
    timeout_ms: int = 60_000
    #: Ends the open transaction when its time is up (set when it starts).
    timer: asyncio.TimerHandle | None = None
    expiry: asyncio.Task[None] | None = None


def _txns(broker: Broker) -> dict[str, _Txn]:
    return broker.transactions


def known(broker: Broker, transactional_id: str) -> _Txn | None:
    """The current instance of ``transactional_id`` served here, if any."""
    return _txns(broker).get(transactional_id)


def transaction_for(
    broker: Broker, transactional_id: str, producer_id: int, epoch: int, fenced_code: int = 47
) -> _Txn:
    """The open instance of ``transactional_id`` if it is this producer id and epoch.

    ``fenced_code`` answers an older epoch: Kafka's PRODUCER_FENCED from the versions that
    know it, INVALID_PRODUCER_EPOCH before.

    Raises:
        LookupError: With the Kafka error code to answer as its argument.
    """
    txn = _txns(broker).get(transactional_id)
    if txn is None or txn.native.producer_id != producer_id:
        raise LookupError(INVALID_PRODUCER_ID_MAPPING)
    if txn.native.producer_epoch != epoch:
        raise LookupError(fenced_code)
    return txn


#: Where a Kafka record batch (magic 2) holds its producer id and epoch.
_PRODUCER = struct.Struct(">qh")
_PRODUCER_AT = 43


def fenced_batches(txn: _Txn, topic_data: Any) -> bool:
    """Whether a Produce carries batches of an older epoch of ``txn``'s producer.

    Such a producer was fenced (by a new instance, or by its transaction's timeout): its
    batches are refused as a partition leader refuses them, INVALID_PRODUCER_EPOCH.
    """
    for t in topic_data:
        for p in t.partition_data:
            records = p.records
            if records is None or len(records) < _PRODUCER_AT + _PRODUCER.size:
                continue
            producer_id, epoch = _PRODUCER.unpack_from(records, _PRODUCER_AT)
            if producer_id == txn.native.producer_id and epoch < txn.native.producer_epoch:
                return True
    return False


def _fenced(version: int, since: int) -> int:
    return _errors.PRODUCER_FENCED if version >= since else _errors.INVALID_PRODUCER_EPOCH


def _claim(broker: Broker, transactional_id: str, timeout_ms: int) -> _Txn:
    """Claims ``transactional_id`` for a new instance (worker thread)."""
    txn = _Txn(
        _core.KafkaTransactionalId(broker.store.native, transactional_id), timeout_ms=timeout_ms
    )
    _txns(broker)[transactional_id] = txn
    return txn


def _stop_clock(txn: _Txn) -> None:
    if txn.timer is not None:
        txn.timer.cancel()
        txn.timer = None


async def init(broker: Broker, transactional_id: str, timeout_ms: int) -> _Txn:
    """A new instance of ``transactional_id`` (InitProducerId): older ones are fenced."""
    old = known(broker, transactional_id)
    if old is not None:
        _stop_clock(old)
    return await asyncio.to_thread(_claim, broker, transactional_id, timeout_ms)


def _start_clock(broker: Broker, transactional_id: str, txn: _Txn) -> None:
    """The transaction has started: it must end within its timeout."""
    if txn.timer is not None or known(broker, transactional_id) is not txn:
        return
    loop = asyncio.get_running_loop()

    def expire() -> None:
        txn.expiry = loop.create_task(_expire(broker, transactional_id, txn))

    txn.timer = loop.call_later(txn.timeout_ms / 1000, expire)


async def _expire(broker: Broker, transactional_id: str, txn: _Txn) -> None:
    # EndTxn (or a new instance) may have come between the timer and this task.
    if txn.timer is None or known(broker, transactional_id) is not txn:
        return
    txn.timer = None
    log.info(
        "transaction of %r open longer than its timeout (%d ms): aborting it",
        transactional_id,
        txn.timeout_ms,
    )
    try:
        # Claiming the id again is what InitProducerId does: the epoch goes up and the
        # open transaction is aborted.
        await asyncio.to_thread(_claim, broker, transactional_id, txn.timeout_ms)
    except _core.TidelogError:
        # The next InitProducerId of the id finishes it instead.
        log.exception("could not abort the timed-out transaction of %r", transactional_id)


def _field(request: Any, name: str) -> Any:
    # AddPartitionsToTxn v0-v3 fields are prefixed in kio's schema.
    value = getattr(request, f"v3_and_below_{name}", None)
    return value if value is not None else getattr(request, name, None)


async def _add_partitions(broker: Broker, request: Any, version: int) -> dict[str, Any]:
    topics = _field(request, "topics") or ()
    wanted = [(t.name, p) for t in topics for p in t.partitions]
    code = 0
    try:
        transactional_id = _field(request, "transactional_id")
        txn = transaction_for(
            broker,
            transactional_id,
            _field(request, "producer_id"),
            _field(request, "producer_epoch"),
            _fenced(version, 2),
        )
        for name, p in wanted:
            if not 0 <= p < broker.topic(name).partitions:
                raise _core.PartitionNotFoundError(f"{name}[{p}]")
        await asyncio.to_thread(txn.native.add_partitions, wanted)
        txn.partitions.update(wanted)
        _start_clock(broker, transactional_id, txn)
    except LookupError as e:
        code = int(e.args[0])
    except _core.TidelogError as e:
        code = _errors.code_for(e)
    results = [
        {
            "name": t.name,
            "results_by_partition": [
                {"partition_index": p, "partition_error_code": code} for p in t.partitions
            ],
        }
        for t in topics
    ]
    return {"throttle_time": 0, "results_by_topic_v3_and_below": results}


async def _add_offsets(broker: Broker, request: Any, version: int) -> dict[str, Any]:
    try:
        txn = transaction_for(
            broker,
            request.transactional_id,
            request.producer_id,
            request.producer_epoch,
            _fenced(version, 2),
        )
    except LookupError as e:
        return {"throttle_time": 0, "error_code": int(e.args[0])}
    _start_clock(broker, request.transactional_id, txn)
    # The group's offsets partition joins the transaction when TxnOffsetCommit writes to it.
    return {"throttle_time": 0, "error_code": 0}


def _commit_offsets(broker: Broker, txn: _Txn, request: Any) -> None:
    table = broker.offsets_table
    offsets_topic = broker.store.native.topic(_core.OFFSETS_TOPIC)
    for t in request.topics:
        topic = broker.topic(t.name)
        wanted = {p.partition_index: p.committed_offset for p in t.partitions}
        generation = getattr(request, "generation_id", -1)
        partition, records = table.commit_records(
            request.group_id, t.name, topic.incarnation, wanted, generation
        )
        where = (_core.OFFSETS_TOPIC, partition)
        if where not in txn.partitions:
            txn.native.add_partitions([where])
            txn.partitions.add(where)
        sequence = txn.sequences.get(where, 0)
        txn.native.append(offsets_topic, partition, records, sequence)
        txn.sequences[where] = sequence + len(records)


async def _txn_offset_commit(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    code = 0
    try:
        txn = transaction_for(
            broker, request.transactional_id, request.producer_id, request.producer_epoch
        )
        await asyncio.to_thread(_commit_offsets, broker, txn, request)
    except LookupError as e:
        code = int(e.args[0])
    except _core.TidelogError as e:
        code = _errors.code_for(e)
    topics = [
        {
            "name": t.name,
            "partitions": [
                {"partition_index": p.partition_index, "error_code": code} for p in t.partitions
            ],
        }
        for t in request.topics
    ]
    return {"throttle_time": 0, "topics": topics}


async def _end_txn(broker: Broker, request: Any, version: int) -> dict[str, Any]:
    try:
        txn = transaction_for(
            broker,
            request.transactional_id,
            request.producer_id,
            request.producer_epoch,
            _fenced(version, 2),
        )
        # Decided by its producer: no longer the timeout's to end.
        _stop_clock(txn)
        await asyncio.to_thread(txn.native.end, bool(request.committed))
    except LookupError as e:
        return {"throttle_time": 0, "error_code": int(e.args[0])}
    except _core.TidelogError as e:
        return {"throttle_time": 0, "error_code": _errors.code_for(e)}
    txn.partitions.clear()
    return {"throttle_time": 0, "error_code": 0}


HANDLERS: dict[int, tuple[int, int, Handler]] = {
    24: (0, 3, _add_partitions),
    25: (0, 3, _add_offsets),
    28: (0, 3, _txn_offset_commit),
    26: (0, 3, _end_txn),
}
