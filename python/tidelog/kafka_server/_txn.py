"""Transactions over the Kafka protocol, as the store's named producers' transactions.

A Kafka ``transactional.id`` is a named producer of the store (``_core.KafkaTransactionalId``,
the core's producer identity): ``InitProducerId`` claims the name (the epoch goes up, an older
instance is fenced, a transaction it left open is finished), ``AddPartitionsToTxn`` records
the partitions durably before anything is written to them, the client's produce batches
carry the producer id and epoch with the transactional flag, ``TxnOffsetCommit`` writes the
group's commit records into the same transaction (the ``__consumer_offsets`` partition of the
group), and ``EndTxn`` decides and writes the markers. ``read_committed`` fetches stop at the
first open transaction and pass over aborted ones, as every reader of the store does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidelog import _core
from tidelog.kafka_server import _errors

if TYPE_CHECKING:
    from tidelog.kafka_server._broker import Broker, Handler

__all__ = ["HANDLERS", "claim", "known", "transaction_for"]

INVALID_PRODUCER_ID_MAPPING = 49
INVALID_TXN_STATE = 48


@dataclass
class _Txn:
    """A transactional id's current instance and its open transaction's partitions."""

    native: _core.KafkaTransactionalId
    partitions: set[tuple[str, int]] = field(default_factory=set)
    #: Next sequence per internal partition this server writes for the producer.
    sequences: dict[tuple[str, int], int] = field(default_factory=dict)


def _txns(broker: Broker) -> dict[str, _Txn]:
    return broker.transactions


def known(broker: Broker, transactional_id: str) -> _Txn | None:
    """The current instance of ``transactional_id`` served here, if any."""
    return _txns(broker).get(transactional_id)


def transaction_for(broker: Broker, transactional_id: str, producer_id: int, epoch: int) -> _Txn:
    """The open instance of ``transactional_id`` if it is this producer id and epoch.

    Raises:
        LookupError: With the Kafka error code to answer as its argument.
    """
    txn = _txns(broker).get(transactional_id)
    if txn is None or txn.native.producer_id != producer_id:
        raise LookupError(INVALID_PRODUCER_ID_MAPPING)
    if txn.native.producer_epoch != epoch:
        raise LookupError(_errors.INVALID_PRODUCER_EPOCH)
    return txn


def claim(broker: Broker, transactional_id: str) -> _Txn:
    """Claims ``transactional_id`` for a new instance (worker thread)."""
    txn = _Txn(_core.KafkaTransactionalId(broker.store.native, transactional_id))
    _txns(broker)[transactional_id] = txn
    return txn


def _field(request: Any, name: str) -> Any:
    # AddPartitionsToTxn v0-v3 fields are prefixed in kio's schema.
    value = getattr(request, f"v3_and_below_{name}", None)
    return value if value is not None else getattr(request, name, None)


async def _add_partitions(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    topics = _field(request, "topics") or ()
    wanted = [(t.name, p) for t in topics for p in t.partitions]
    code = 0
    try:
        txn = transaction_for(
            broker,
            _field(request, "transactional_id"),
            _field(request, "producer_id"),
            _field(request, "producer_epoch"),
        )
        for name, p in wanted:
            if not 0 <= p < broker.topic(name).partitions:
                raise _core.PartitionNotFoundError(f"{name}[{p}]")
        await asyncio.to_thread(txn.native.add_partitions, wanted)
        txn.partitions.update(wanted)
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


async def _add_offsets(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    try:
        transaction_for(
            broker, request.transactional_id, request.producer_id, request.producer_epoch
        )
    except LookupError as e:
        return {"throttle_time": 0, "error_code": int(e.args[0])}
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


async def _end_txn(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    try:
        txn = transaction_for(
            broker, request.transactional_id, request.producer_id, request.producer_epoch
        )
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
