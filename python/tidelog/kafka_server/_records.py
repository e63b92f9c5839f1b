"""Produce, InitProducerId, Fetch and ListOffsets: records into and out of the store.

The record batches are bytes and stay in the core: ``_core.kafka_append`` checks a Kafka
batch (CRC32C, layout) and appends it as one store batch with its producer id, epoch and
sequence, where the partition's producer state deduplicates retries and refuses gaps, as
for tidelog's own idempotent producers (a compressed batch, gzip, snappy, lz4 or zstd, is
decompressed and checked there too, and stored compressed); ``_core.kafka_read`` encodes
stored batches as uncompressed Kafka batches at the same offsets, into a buffer the answer
is written from without another copy. Appends run on a worker thread (an append may wait
for the disk) so one slow partition never stalls the other clients.

Transactions in a Fetch are served as Kafka serves them: the markers as control batches
(a consumer's position moves past them, so it reaches the end of a partition that ends in
one) and aborted transactions' batches too, listed in ``aborted_transactions`` for
``read_committed`` clients, which drop them; ``read_uncommitted`` clients see them, as on
Kafka.

Fetch sessions (KIP-227) are declined: every answer has session id 0, which tells clients
to send full fetch requests (the Java client and kafka-python then list their partitions
in each request; librdkafka never uses sessions). A session saves re-sending the partition
list, which on loopback with a store's handful of partitions costs microseconds, while
the state per client (cached partitions, epochs, eviction) would be kept here.

A Fetch with nothing to return waits for the store to ring the topics' bells (any process
appending to them does), up to the client's ``max_wait``: no timer polls.

A ``read_committed`` Fetch held back by an open transaction finishes it if its producer is
dead (``abort_orphaned_transactions``, at most once a second, as the store's own consumers
do): a store producer that died mid-transaction never comes back to end it. Kafka clients'
transactions served here are alive (the server holds them) until their timeout ends them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from tidelog import _core
from tidelog.kafka_server import _errors, _txn

if TYPE_CHECKING:
    from tidelog.kafka_server._broker import Broker, Handler

__all__ = ["HANDLERS"]

log = logging.getLogger("tidelog.kafka_server")

_LATEST, _EARLIEST, _MAX_TIMESTAMP = -1, -2, -3
# Tiered storage's specs (ListOffsets v8+): the store keeps everything locally, so the
# earliest local offset is the earliest, and nothing is tiered or waiting to be (Kafka
# answers -1 for these on a topic without remote storage).
_EARLIEST_LOCAL, _LATEST_TIERED, _EARLIEST_PENDING_UPLOAD = -4, -5, -6
_READ_COMMITTED = 1
#: Least time between two looks for dead producers' transactions.
_ORPHAN_CHECK_S = 1.0


def _append(broker: Broker, topic_data: Any) -> list[dict[str, Any]]:
    """Appends every partition's batch; runs on a worker thread."""
    responses = []
    for t in topic_data:
        partitions = []
        try:
            topic: _core.Topic | None = broker.topic(t.name)
        except _core.TidelogError:
            topic = None
        for p in t.partition_data:
            answer: dict[str, Any] = {
                "index": p.index,
                "error_code": 0,
                "base_offset": -1,
                "log_append_time": -1,
                "log_start_offset": -1,
                "error_message": None,
            }
            try:
                if topic is None or not 0 <= p.index < topic.partitions:
                    answer["error_code"] = _errors.UNKNOWN_TOPIC_OR_PARTITION
                elif p.records is None:
                    answer["error_code"] = 87  # INVALID_RECORD
                    answer["error_message"] = "no records"
                else:
                    code, base, _duplicate, reason = _core.kafka_append(topic, p.index, p.records)
                    answer |= {"error_code": code, "base_offset": base if code == 0 else -1}
                    answer["error_message"] = reason
                    if code == 0:
                        answer["log_start_offset"] = topic.start_offset(p.index)
            except _core.TidelogError as e:
                answer |= {"error_code": _errors.code_for(e), "error_message": str(e)}
            partitions.append(answer)
        responses.append({"name": t.name, "partition_responses": partitions})
    return responses


def _refuse_all(topic_data: Any, code: int) -> list[dict[str, Any]]:
    return [
        {
            "name": t.name,
            "partition_responses": [
                {"index": p.index, "error_code": code, "base_offset": -1} for p in t.partition_data
            ],
        }
        for t in topic_data
    ]


async def _produce(broker: Broker, request: Any, _version: int) -> dict[str, Any] | None:
    if request.transactional_id is not None:
        # Every partition must have joined the transaction first (AddPartitionsToTxn):
        # the markers go only to the partitions it recorded.
        txn = _txn.known(broker, request.transactional_id)
        wanted = {(t.name, p.index) for t in request.topic_data for p in t.partition_data}
        if txn is None or not wanted <= txn.partitions:
            code = _txn.INVALID_TXN_STATE
            if txn is not None and _txn.fenced_batches(txn, request.topic_data):
                code = _errors.INVALID_PRODUCER_EPOCH  # as its partitions' leader says
            return (
                None
                if request.acks == 0
                else {"responses": _refuse_all(request.topic_data, code), "throttle_time": 0}
            )
    responses = await asyncio.to_thread(_append, broker, request.topic_data)
    if request.acks == 0:
        return None
    return {"responses": responses, "throttle_time": 0}


async def _init_producer_id(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    if request.transactional_id is not None:
        timeout_ms = int(request.transaction_timeout.total_seconds() * 1000)
        if not 0 < timeout_ms <= _txn.MAX_TIMEOUT_MS:
            code = _errors.INVALID_TRANSACTION_TIMEOUT
            return {"throttle_time": 0, "error_code": code, "producer_id": -1, "producer_epoch": -1}
        try:
            txn = await _txn.init(broker, request.transactional_id, timeout_ms)
        except _core.TidelogError as e:
            code = _errors.code_for(e)
            return {"throttle_time": 0, "error_code": code, "producer_id": -1, "producer_epoch": -1}
        return {
            "throttle_time": 0,
            "error_code": 0,
            "producer_id": txn.native.producer_id,
            "producer_epoch": txn.native.producer_epoch,
        }
    producer_id = await asyncio.to_thread(_core.kafka_producer_id, broker.store.native)
    return {"throttle_time": 0, "error_code": 0, "producer_id": producer_id, "producer_epoch": 0}


def _fetch_partition(
    topic: _core.Topic | None, p: Any, committed: bool, budget: int
) -> tuple[dict[str, Any], int]:
    """One partition's answer and the bytes of records it holds."""
    answer: dict[str, Any] = {
        "partition_index": p.partition,
        "error_code": 0,
        "high_watermark": -1,
        "last_stable_offset": -1,
        "log_start_offset": -1,
        "aborted_transactions": [],
        "preferred_read_replica": -1,
        "records": b"",
    }
    if topic is None or not 0 <= p.partition < topic.partitions:
        answer["error_code"] = _errors.UNKNOWN_TOPIC_OR_PARTITION
        return answer, 0
    try:
        end = topic.end_offset(p.partition)
        stable = topic.last_stable_offset(p.partition)
        answer |= {
            "high_watermark": end,
            "last_stable_offset": stable,
            "log_start_offset": topic.start_offset(p.partition),
        }
        limit = min(p.partition_max_bytes, budget)
        if not answer["log_start_offset"] <= p.fetch_offset <= end:
            answer["error_code"] = _errors.OFFSET_OUT_OF_RANGE
            return answer, 0
        if p.fetch_offset == end or limit <= 0:
            return answer, 0
        records, _next, aborted = _core.kafka_read(
            topic, p.partition, p.fetch_offset, max(limit, 1), committed
        )
    except _core.TidelogError as e:
        answer["error_code"] = _errors.code_for(e)
        return answer, 0
    answer["records"] = records
    if committed:
        answer["aborted_transactions"] = [
            {"producer_id": producer_id, "first_offset": first} for producer_id, first in aborted
        ]
    return answer, len(records)


def _fetch_once(broker: Broker, request: Any) -> tuple[list[dict[str, Any]], int]:
    committed = request.isolation_level == _READ_COMMITTED
    budget = request.max_bytes if request.max_bytes > 0 else 1 << 30
    total = 0
    responses = []
    for t in request.topics:
        try:
            topic: _core.Topic | None = broker.topic(t.topic)
        except _core.TidelogError:
            topic = None
        partitions = []
        for p in t.partitions:
            answer, size = _fetch_partition(topic, p, committed, budget - total)
            total += size
            partitions.append(answer)
        responses.append({"topic": t.topic, "partitions": partitions})
    return responses, total


def _bells(broker: Broker, request: Any) -> list[tuple[_core.Bell, int]]:
    bells = []
    for t in request.topics:
        try:
            bell = _core.Bell.topic(broker.topic(t.topic))
        except _core.TidelogError:
            continue
        bells.append((bell, bell.ticket()))
    return bells


def _session_error(request: Any) -> int:
    """The error for a request naming a fetch session: this server never creates one."""
    session_id = getattr(request, "session_id", 0)
    epoch = getattr(request, "session_epoch", -1)
    if session_id != 0:
        return _errors.FETCH_SESSION_ID_NOT_FOUND
    if epoch not in (0, -1):
        # An incremental fetch with no session: the client must start over.
        return _errors.INVALID_FETCH_SESSION_EPOCH
    return 0


async def _fetch(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    if code := _session_error(request):
        return {"throttle_time": 0, "error_code": code, "session_id": 0, "responses": []}
    wait = request.max_wait
    deadline = time.monotonic() + (wait.total_seconds() if hasattr(wait, "total_seconds") else 0)
    while True:
        # The tickets are taken before reading: an append after the read moves them.
        bells = _bells(broker, request)
        responses, total = _fetch_once(broker, request)
        left = deadline - time.monotonic()
        if total >= max(request.min_bytes, 1) or left <= 0 or not bells:
            break
        waits = [asyncio.ensure_future(broker.waiter.wait(b, t, left)) for b, t in bells]
        try:
            done, _pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not any(w.result() for w in done if not w.cancelled()):
                responses, total = _fetch_once(broker, request)
                break
        finally:
            for w in waits:
                w.cancel()
    if request.isolation_level == _READ_COMMITTED and _held_back(responses):
        _check_orphans(broker)
    # session_id 0: no fetch session, the client sends full requests (KIP-227 allows it).
    return {"throttle_time": 0, "error_code": 0, "session_id": 0, "responses": responses}


def _held_back(responses: list[dict[str, Any]]) -> bool:
    """Whether a partition returned nothing while records past its last stable offset wait."""
    return any(
        not p["records"] and p["error_code"] == 0 and p["last_stable_offset"] < p["high_watermark"]
        for t in responses
        for p in t["partitions"]
    )


def _check_orphans(broker: Broker) -> None:
    """Finishes dead producers' transactions in the background, at most once a second.

    Their markers ring the partitions' bells, which wakes the fetches waiting on them.
    """
    now = time.monotonic()
    if now - broker.orphans_checked < _ORPHAN_CHECK_S or broker.orphan_check is not None:
        return
    broker.orphans_checked = now

    async def check() -> None:
        try:
            finished = await asyncio.to_thread(broker.store.native.abort_orphaned_transactions)
            if finished:
                log.info("finished the transactions of dead producers %s", finished)
        except _core.TidelogError:
            log.exception("could not finish dead producers' transactions")
        finally:
            broker.orphan_check = None

    broker.orphan_check = asyncio.get_running_loop().create_task(check())


def _list_offset(topic: _core.Topic, p: Any, committed: bool) -> dict[str, Any]:
    partition = p.partition_index
    answer: dict[str, Any] = {
        "partition_index": partition,
        "error_code": 0,
        "timestamp": -1,
        "offset": -1,
        "leader_epoch": 0,
    }
    if not 0 <= partition < topic.partitions:
        answer["error_code"] = _errors.UNKNOWN_TOPIC_OR_PARTITION
        return answer
    wanted = p.timestamp
    if wanted == _LATEST:
        end = topic.last_stable_offset(partition) if committed else topic.end_offset(partition)
        answer["offset"] = end
    elif wanted in (_EARLIEST, _EARLIEST_LOCAL):
        answer["offset"] = topic.start_offset(partition)
    elif wanted in (_LATEST_TIERED, _EARLIEST_PENDING_UPLOAD):
        pass  # offset -1: nothing tiered
    elif wanted == _MAX_TIMESTAMP:
        # The last record's offset and timestamp (timestamps are mostly in order here).
        end = topic.end_offset(partition)
        if end > topic.start_offset(partition):
            message = next(iter(topic.read(partition, end - 1)), None)
            if message is not None:
                answer |= {"offset": message.offset, "timestamp": message.timestamp_ms}
    elif wanted >= 0:
        found = topic.offset_for_timestamp(partition, wanted)
        if found is not None:
            message = next(iter(topic.read(partition, found)), None)
            answer |= {
                "offset": found,
                "timestamp": message.timestamp_ms if message is not None else -1,
            }
    else:
        answer["error_code"] = _errors.INVALID_REQUEST
    return answer


async def _list_offsets(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    committed = getattr(request, "isolation_level", 0) == _READ_COMMITTED
    topics = []
    for t in request.topics:
        try:
            topic = broker.topic(t.name)
        except _core.TidelogError as e:
            code = _errors.code_for(e)
            partitions = [
                {"partition_index": p.partition_index, "error_code": code} for p in t.partitions
            ]
        else:
            partitions = []
            for p in t.partitions:
                try:
                    partitions.append(_list_offset(topic, p, committed))
                except _core.TidelogError as e:
                    partitions.append(
                        {"partition_index": p.partition_index, "error_code": _errors.code_for(e)}
                    )
        topics.append({"name": t.name, "partitions": partitions})
    return {"throttle_time": 0, "topics": topics}


HANDLERS: dict[int, tuple[int, int, Handler]] = {
    # v10-11 add only response fields and an error code; v12 lets a transactional producer
    # skip AddPartitionsToTxn (transaction version 2), which is not served.
    0: (3, 11, _produce),
    # v13+ names topics by id, which the store does not keep (Metadata answers the zero
    # id, and clients then stay at v12).
    1: (4, 12, _fetch),
    2: (1, 11, _list_offsets),
    22: (0, 4, _init_producer_id),
}
