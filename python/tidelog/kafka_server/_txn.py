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

Transactions outlive the server, as they outlive a Kafka coordinator (whose state is in
``__transaction_state``): the core records each one's start (wall clock) and timeout with
its first partition, in the same durable write. A server starting on the store takes up
every Kafka transaction left open (``KafkaTransactionalId.resume``: same producer id and
epoch, nothing fenced) and ends it when its time, counted from that recorded start, is up;
until then its producer may go on and commit it. A producer idle between transactions is
taken up at its first request, with the timeout it gave in InitProducerId (kept with its
epoch). While no server runs, the store's readers leave such a transaction alone until its
time is up (then they abort it as an orphan).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidelog import _core
from tidelog.groups import read_state
from tidelog.kafka_server import _errors
from tidelog.kafka_server._groups import (
    Claim,
    commit_claim,
    every_partition,
    taken,
    topic_answer,
    validate_commit,
)

if TYPE_CHECKING:
    from tidelog.kafka_server._broker import Broker, Handler

__all__ = [
    "HANDLERS",
    "MAX_TIMEOUT_MS",
    "close",
    "fenced_batches",
    "init",
    "known",
    "resume_open",
    "transaction_for",
]

log = logging.getLogger("tidelog.kafka_server")

INVALID_PRODUCER_ID_MAPPING = 49
INVALID_TXN_STATE = 48
#: The longest ``transaction.timeout.ms`` accepted (Kafka's ``transaction.max.timeout.ms``).
MAX_TIMEOUT_MS = 900_000
#: Kafka's default ``transaction.timeout.ms``: that of an instance claimed before its
#: timeout was kept with its epoch, when taken up after a restart.
DEFAULT_TIMEOUT_MS = 60_000


@dataclass
class _Txn:
    """A transactional id's current instance and its open transaction's partitions."""

    native: _core.KafkaTransactionalId
    partitions: set[tuple[str, int]] = field(default_factory=set)
    #: Next sequence per internal partition this server writes for the producer.
    sequences: dict[tuple[str, int], int] = field(default_factory=dict)
    #: The producer's ``transaction.timeout.ms``.
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    #: Ends the open transaction when its time is up (set when it starts).
    timer: asyncio.TimerHandle | None = None
    expiry: asyncio.Task[None] | None = None


def _txns(broker: Broker) -> dict[str, _Txn]:
    return broker.transactions


def known(broker: Broker, transactional_id: str) -> _Txn | None:
    """The current instance of ``transactional_id`` served here, if any."""
    return _txns(broker).get(transactional_id)


async def transaction_for(
    broker: Broker, transactional_id: str, producer_id: int, epoch: int, fenced_code: int = 47
) -> _Txn:
    """The open instance of ``transactional_id`` if it is this producer id and epoch.

    An id not served since the server started is taken up if ``producer_id`` and ``epoch``
    are still its current instance (its client goes on after a restart). ``fenced_code``
    answers an older epoch: Kafka's PRODUCER_FENCED from the versions that know it,
    INVALID_PRODUCER_EPOCH before.

    Raises:
        LookupError: With the Kafka error code to answer as its argument.
    """
    txn = _txns(broker).get(transactional_id)
    if txn is None:
        txn = await _resume(broker, transactional_id, producer_id, epoch)
    if txn is None:
        current = await asyncio.to_thread(_registered, broker, transactional_id)
        if current is not None and current[0] == producer_id and current[1] > epoch:
            raise LookupError(fenced_code)
        raise LookupError(INVALID_PRODUCER_ID_MAPPING)
    if txn.native.producer_id != producer_id:
        raise LookupError(INVALID_PRODUCER_ID_MAPPING)
    if txn.native.producer_epoch != epoch:
        raise LookupError(fenced_code)
    return txn


def _registered(broker: Broker, transactional_id: str) -> tuple[int, int] | None:
    """The current (producer id, epoch) of ``transactional_id`` (worker thread)."""
    for entry in broker.store.native.named_producers():
        if entry["name"] == transactional_id:
            return int(entry["producer_id"]), int(entry["epoch"])
    return None


def _take_up(
    broker: Broker, transactional_id: str, producer_id: int, epoch: int
) -> tuple[_Txn, int | None] | None:
    """Takes up ``transactional_id`` at ``producer_id``, ``epoch`` (worker thread).

    Returns the instance and when its open transaction started, or None if that is not the
    id's current instance or a process holds it. A decided commit is finished here: the
    client is told it committed when it retries EndTxn.
    """
    native = _core.KafkaTransactionalId.resume(
        broker.store.native, transactional_id, producer_id, epoch
    )
    if native is None:
        return None
    txn = _Txn(native, timeout_ms=native.timeout_ms or DEFAULT_TIMEOUT_MS)
    open_txn = native.transaction()
    if open_txn is None:
        return txn, None
    committing, partitions, started_ms, timeout_ms = open_txn
    if committing:
        native.end(True)
        return txn, None
    txn.partitions.update(partitions)
    if timeout_ms is not None:
        txn.timeout_ms = timeout_ms
    return txn, started_ms


async def _resume(
    broker: Broker, transactional_id: str, producer_id: int, epoch: int
) -> _Txn | None:
    """Takes up an instance served before this server started (see :func:`_take_up`)."""
    try:
        taken = await asyncio.to_thread(_take_up, broker, transactional_id, producer_id, epoch)
    except _core.InvalidConfigError:
        return None  # not a name the store's producers may have: never served
    # Another request for the id may have claimed or taken it up meanwhile.
    current = known(broker, transactional_id)
    if taken is None or current is not None:
        return current
    txn, started_ms = taken
    _txns(broker)[transactional_id] = txn
    if txn.partitions:
        _start_clock(broker, transactional_id, txn, _remaining_s(txn, started_ms))
        log.info("took up the open transaction of %r", transactional_id)
    return txn


def _remaining_s(txn: _Txn, started_ms: int | None) -> float:
    """Seconds left of ``txn``'s timeout, counted from its recorded start.

    A transaction recorded without a start (by an earlier version) gets all of it, from now.
    """
    if started_ms is None:
        return txn.timeout_ms / 1000
    return max(0.0, (started_ms + txn.timeout_ms) / 1000 - time.time())


async def resume_open(broker: Broker) -> None:
    """Takes up the Kafka transactions left open by an earlier run (server start).

    Those with a recorded time limit are Kafka clients' (the store's own transactions have
    none, and are finished by their producers' next instance or as orphans).
    """
    try:
        entries = await asyncio.to_thread(broker.store.native.named_producers)
    except _core.TidelogError:
        log.exception("could not list the transactions left open")
        return
    for entry in entries:
        if entry["transaction"] is None or entry["deadline_ms"] is None or entry["alive"]:
            continue
        name = entry["name"]
        try:
            await _resume(broker, name, entry["producer_id"], entry["epoch"])
        except _core.TidelogError:
            # Its next request (or the store's orphan check, once its time is up) ends it.
            log.exception("could not take up the open transaction of %r", name)


def close(broker: Broker) -> None:
    """Stops the timers and lets go of the ids (for the server's next run to take up)."""
    for txn in _txns(broker).values():
        _stop_clock(txn)
    _txns(broker).clear()


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
        _core.KafkaTransactionalId(broker.store.native, transactional_id, timeout_ms),
        timeout_ms=timeout_ms,
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


def _start_clock(
    broker: Broker, transactional_id: str, txn: _Txn, delay_s: float | None = None
) -> None:
    """The transaction has started: it must end within its timeout.

    That is ``delay_s`` from now (a transaction taken up after a restart), else all of it.
    """
    if txn.timer is not None or known(broker, transactional_id) is not txn:
        return
    loop = asyncio.get_running_loop()

    def expire() -> None:
        txn.expiry = loop.create_task(_expire(broker, transactional_id, txn))

    delay = txn.timeout_ms / 1000 if delay_s is None else delay_s
    txn.timer = loop.call_later(delay, expire)


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
        txn = await transaction_for(
            broker,
            transactional_id,
            _field(request, "producer_id"),
            _field(request, "producer_epoch"),
            _fenced(version, 2),
        )
        for name, p in wanted:
            if not 0 <= p < broker.topic(name).partitions:
                raise _core.PartitionNotFoundError(f"{name}[{p}]")
        await asyncio.to_thread(txn.native.add_partitions, wanted, txn.timeout_ms)
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
        txn = await transaction_for(
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


def _commit_offsets(
    broker: Broker, txn: _Txn, request: Any, claims: dict[str, Claim | None]
) -> list[dict[str, Any]]:
    """Sends the commits into the transaction: each topic's partitions' error codes.

    A member's commit of a partition another member may be consuming now is refused
    (:func:`~tidelog.kafka_server._groups.taken`); the others carry the generation of the
    topic's tidelog group they were checked against (-1 for a client that is not a member
    of it). The group may move on before the transaction ends: then readers pass over
    them if a newer generation committed the partition first.
    """
    table = broker.offsets_table
    offsets_topic = broker.store.native.topic(_core.OFFSETS_TOPIC)
    store_dir = str(broker.store.path)
    answers = []
    for t in request.topics:
        wanted = {p.partition_index: p.committed_offset for p in t.partitions}
        codes = dict.fromkeys(wanted, 0)
        claim = claims[t.name]
        generation = -1
        try:
            topic = broker.topic(t.name)
            if claim is not None:
                state = read_state(store_dir, t.name, request.group_id)
                refused = taken(state, claim)
                codes = {p: _errors.ILLEGAL_GENERATION if p in refused else 0 for p in wanted}
                wanted = {p: o for p, o in wanted.items() if p not in refused}
                if claim.membership is not None:
                    generation = state.generation
            if wanted:
                partition, records = table.commit_records(
                    request.group_id, t.name, topic.incarnation, wanted, generation
                )
                where = (_core.OFFSETS_TOPIC, partition)
                if where not in txn.partitions:
                    txn.native.add_partitions([where], txn.timeout_ms)
                    txn.partitions.add(where)
                sequence = txn.sequences.get(where)
                if sequence is None:
                    # Taken up after a restart, this epoch may have written there already.
                    sequence = txn.native.next_sequence(offsets_topic, partition)
                txn.native.append(offsets_topic, partition, records, sequence)
                txn.sequences[where] = sequence + len(records)
        except _core.TidelogError as e:
            codes = dict.fromkeys(codes, _errors.code_for(e))
        answers.append(topic_answer(t, codes))
    return answers


async def _txn_offset_commit(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    # Before v3 (KIP-447) the request names no member: a commit of no generation.
    member, code = validate_commit(
        broker,
        request.group_id,
        getattr(request, "member_id", ""),
        getattr(request, "group_instance_id", None),
        getattr(request, "generation_id", -1),
        transactional=True,
    )
    if code:
        return {"throttle_time": 0, "topics": every_partition(request, code)}
    claims = {
        t.name: commit_claim(broker, request.group_id, member, t.name) for t in request.topics
    }
    try:
        txn = await transaction_for(
            broker, request.transactional_id, request.producer_id, request.producer_epoch
        )
        topics = await asyncio.to_thread(_commit_offsets, broker, txn, request, claims)
        # Started by AddOffsetsToTxn, unless that came before a restart: the clock of a
        # transaction taken up with nothing recorded yet starts here.
        _start_clock(broker, request.transactional_id, txn)
    except LookupError as e:
        topics = every_partition(request, int(e.args[0]))
    except _core.TidelogError as e:
        topics = every_partition(request, _errors.code_for(e))
    return {"throttle_time": 0, "topics": topics}


async def _end_txn(broker: Broker, request: Any, version: int) -> dict[str, Any]:
    try:
        txn = await transaction_for(
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
