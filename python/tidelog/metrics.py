"""Metrics of a store for dashboards: :meth:`tidelog.Store.metrics`, Prometheus, OpenTelemetry.

:func:`collect` (``store.metrics()``) returns counters and gauges as plain data, read from
what every process shares (the partitions' control blocks, the committed-offsets log, the
group and work-queue state files), so it describes a store other processes are writing.
Producers are the exception: only this process's are listed (their figures live in their
ring buffers). Reading costs a few microseconds per partition and nothing on the append
path: the figures are the ones writers publish anyway.

:func:`register_prometheus` exposes the same figures to ``prometheus_client`` (read at
scrape time), :func:`register_opentelemetry` to an OpenTelemetry meter through observable
instruments. Both packages are optional extras (``pip install 'tidelog[prometheus]'``,
``'tidelog[opentelemetry]'``); without them these functions raise
:class:`~tidelog._optional.MissingDependencyError` naming what to install.

Metric names follow the Prometheus conventions: base units (seconds, bytes), ``_total``
on counters, labels ``topic``, ``partition``, ``group``, ``producer``, ``priority`` and
``kind``; :data:`METRICS` lists them all.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from tidelog import _core
from tidelog._core import TopicNotFoundError
from tidelog._optional import MissingDependencyError, require

if TYPE_CHECKING:
    from tidelog._core import Producer
    from tidelog._protocols import StoreView
    from tidelog.offsets import OffsetStore

__all__ = [
    "METRICS",
    "MetricSpec",
    "MetricsSource",
    "MissingDependencyError",
    "collect",
    "prometheus_text",
    "register_opentelemetry",
    "register_prometheus",
    "samples",
    "serve_prometheus",
]

Metrics = dict[str, Any]
Labels = dict[str, str]


# --- collecting ------------------------------------------------------------------------


class MetricsSource(Protocol):
    """What the exporters read: :class:`tidelog.Store` is the implementation."""

    @property
    def closed(self) -> bool:
        """True once the store is closed."""
        ...

    def metrics(self) -> Metrics:
        """The snapshot of :func:`collect`."""
        ...


def collect(
    store: StoreView, offsets: Callable[[], OffsetStore], producers: Iterable[Producer]
) -> Metrics:
    """The implementation of :meth:`tidelog.Store.metrics`.

    Args:
        store: An open store.
        offsets: Returns the store's offset store (called only if a group ever ran).
        producers: The producers made from the store (closed ones are left out).

    Returns:
        A dict:

        - ``time_ms``: when the snapshot was taken (ms since the epoch).
        - ``topics``: ``{topic: {"partitions": {p: {...}}, "messages", "size_bytes"}}``;
          each partition has ``messages`` (retained: end minus start), ``size_bytes``,
          ``start_offset``, ``end_offset``, ``segments``, ``dirty_ratio`` and
          ``dirty_bytes`` (of its closed segments: what compaction has not seen yet),
          ``compactions`` (compactions done over the partition's lifetime: each one that
          compacted anything; kept with the cleaner's checkpoint, so reopening and recovery do
          not move it) and ``last_timestamp_ms`` (newest timestamp in the active segment,
          None while it is empty).
        - ``groups``: ``{group: {topic: {"members", "partitions": {p: {"committed",
          "end_offset", "lag_messages", "lag_seconds"}}, "lag_messages",
          "lag_seconds"}}}``. ``lag_messages`` is end minus committed (the start offset
          where nothing is committed); ``lag_seconds`` is now minus the timestamp of the
          oldest unconsumed message (the one at the committed offset), 0 when caught up; a
          topic's figures are the sum of the messages and the largest of the seconds.
        - ``producers``: this process's open producers by name: ``sent``, ``written``,
          ``failed``, ``buffered``, ``dropped`` (``{priority: count}``),
          ``blocked_seconds``, ``high_watermark_hits``.
        - ``work_queues``: ``{group: {topic: {"backlog", "in_flight", "redelivered",
          "acked", "dead_lettered", "archived", "skipped"}}}``; ``redelivered`` counts every
          time a message was handed out again (a lifetime counter, as ``acked`` is).
        - ``recovery``: ``{kind: {"events", "bytes"}}`` for each kind of what recovery ever
          removed from the store's partitions: ``"torn_tail"`` (truncated), ``"quarantined"``
          (damage moved aside), ``"unsynced"`` (unsynced data a machine restart lost).

    Values are read one after another without stopping writers, so concurrent appends may
    make them slightly inconsistent with each other; a topic deleted meanwhile is left out.
    """
    now_ms = int(time.time() * 1000)
    path = store.path
    public = set(store.topics())
    topics: dict[str, Any] = {}
    opened: dict[str, _core.Topic] = {}
    recovery = {kind: {"events": 0, "bytes": 0} for kind in _core.RECOVERY_KINDS}
    for name in store.topics(internal=True):
        try:
            topic = store.topic(name) if name in public else store.native.topic(name)
            figures = _core.partition_metrics(topic)
        except TopicNotFoundError:
            continue  # deleted by another process since topics() listed it
        partitions: dict[int, dict[str, Any]] = {}
        for p, (start, end, size, segments, dirty, closed, last_ts, lost, compactions) in enumerate(
            figures
        ):
            partitions[p] = {
                "messages": max(0, end - start),
                "size_bytes": size,
                "start_offset": start,
                "end_offset": end,
                "segments": segments,
                "dirty_ratio": dirty / closed if closed else 0.0,
                "dirty_bytes": dirty,
                "compactions": compactions,
                "last_timestamp_ms": last_ts,
            }
            for kind, events, removed in lost:
                recovery[kind]["events"] += events
                recovery[kind]["bytes"] += removed
        if name not in public:
            continue  # the store's own topics: counted in recovery only
        opened[name] = topic
        topics[name] = {
            "partitions": partitions,
            "messages": sum(v["messages"] for v in partitions.values()),
            "size_bytes": sum(v["size_bytes"] for v in partitions.values()),
        }
    return {
        "time_ms": now_ms,
        "topics": topics,
        "groups": _groups(store, offsets, path, opened, topics, now_ms),
        "producers": _producers(producers),
        "work_queues": _work_queues(path, opened),
        "recovery": recovery,
    }


#: Timestamps of messages at committed offsets, per store: ``{(topic, incarnation):
#: {(partition, offset): timestamp_ms}}``. A paused or slow group is asked about the same
#: offset at every scrape; the message there never changes (a topic created again has a new
#: incarnation), so it is read once.
_TIMESTAMPS: weakref.WeakKeyDictionary[
    StoreView, dict[tuple[str, int], dict[tuple[int, int], int]]
] = weakref.WeakKeyDictionary()
_TIMESTAMPS_KEPT = 65_536


def _timestamps(
    store: StoreView, topic: _core.Topic, wanted: list[tuple[int, int]]
) -> dict[tuple[int, int], int]:
    """Timestamp of the first message at or after each ``(partition, offset)``.

    Returns the topic's cache, which holds (at least) every one of ``wanted`` that has a
    message; an offset at the end of the log is absent.
    """
    cache = _TIMESTAMPS.setdefault(store, {}).setdefault((topic.name, topic.incarnation), {})
    missing = [key for key in wanted if key not in cache]
    if missing:
        if len(cache) + len(missing) > _TIMESTAMPS_KEPT:
            cache.clear()
        for key, ts in zip(missing, _core.timestamps_at(topic, missing), strict=True):
            if ts is not None:
                cache[key] = ts
    return cache


def _groups(
    store: StoreView,
    offset_store: Callable[[], OffsetStore],
    path: str,
    opened: dict[str, _core.Topic],
    topics: dict[str, Any],
    now_ms: int,
) -> dict[str, dict[str, Any]]:
    from tidelog.groups import list_groups, read_state
    from tidelog.offsets import OFFSETS_TOPIC

    with_state = set(list_groups(path))
    if OFFSETS_TOPIC not in store.topics(internal=True) and not with_state:
        return {}  # no group ever ran: do not create the offsets topic to say so
    offsets = offset_store()
    keys = {(topic, group) for (group, topic) in offsets.groups()} | with_state
    bounds = {
        name: (
            [f["end_offset"] for f in t["partitions"].values()],
            [f["start_offset"] for f in t["partitions"].values()],
        )
        for name, t in topics.items()
    }
    # First every group's committed offsets, then the timestamps they need, one call per
    # topic (groups at offsets of the same stored batch share one read of it).
    rows: list[tuple[str, str, int, dict[int, int], list[int]]] = []
    wanted: dict[str, set[tuple[int, int]]] = {}
    for topic_name, group in sorted(keys):
        topic = opened.get(topic_name)
        if topic is None:
            continue  # deleted
        commits = offsets.committed_offsets(group, topic_name, topic.incarnation)
        if (topic_name, group) in with_state:
            state = read_state(path, topic_name, group)
            members = sum(1 for m in state.members.values() if m["expires_ms"] > now_ms)
        elif not commits:
            continue  # commits of a deleted topic of the same name only
        else:
            members = 0
        ends, starts = bounds[topic_name]
        # Nothing committed: counted from the start, as consumer.lag() does.
        committed = [commits.get(p, start) for p, start in enumerate(starts)]
        wanted.setdefault(topic_name, set()).update(
            [(p, c) for p, (c, end) in enumerate(zip(committed, ends, strict=True)) if c < end]
        )
        rows.append((topic_name, group, members, commits, committed))
    stamps: dict[str, dict[tuple[int, int], int]] = {}
    for topic_name, lagging in wanted.items():
        try:
            stamps[topic_name] = _timestamps(store, opened[topic_name], sorted(lagging))
        except TopicNotFoundError:
            stamps[topic_name] = {}  # deleted meanwhile
    found: dict[str, dict[str, Any]] = {}
    for topic_name, group, members, commits, committed in rows:
        ends = bounds[topic_name][0]
        topic_stamps = stamps[topic_name]
        partitions: dict[int, dict[str, Any]] = {}
        # One pass per group and partition, sums kept on the way (a scrape of 100 partitions
        # x 10 groups runs this 1,000 times).
        lag_total = 0
        age_max = 0.0
        for p, (c, end) in enumerate(zip(committed, ends, strict=True)):
            ts = topic_stamps.get((p, c))
            lag = end - c if end > c else 0
            age = 0.0 if ts is None or ts >= now_ms else (now_ms - ts) / 1000
            lag_total += lag
            if age > age_max:
                age_max = age
            partitions[p] = {
                "committed": commits.get(p),
                "end_offset": end,
                "lag_messages": lag,
                "lag_seconds": age,
            }
        found.setdefault(group, {})[topic_name] = {
            "members": members,
            "partitions": partitions,
            "lag_messages": lag_total,
            "lag_seconds": age_max,
        }
    return found


def _producers(producers: Iterable[Producer]) -> dict[str, dict[str, Any]]:
    """The figures of each open producer, named by :func:`tidelog.stats.producers_by_name`."""
    from tidelog.stats import producers_by_name

    out: dict[str, dict[str, Any]] = {}
    for key, producer in producers_by_name(producers).items():
        s = producer.stats()
        out[key] = {
            "sent": s["sent"],
            "written": s["written"],
            "failed": s.get("failed", 0),
            "buffered": s["buffered"],
            "dropped": dict(s["dropped"]),
            "blocked_seconds": float(s["blocked_seconds"]),
            "high_watermark_hits": s["high_watermark_hits"],
        }
    return out


def _work_queues(path: str, opened: dict[str, _core.Topic]) -> dict[str, dict[str, Any]]:
    from tidelog.queue_journal import list_queues, queue_files, read_state
    from tidelog.stats import work_queue_stats

    found: dict[str, dict[str, Any]] = {}
    for topic_name, group in list_queues(path):
        topic = opened.get(topic_name)
        if topic is None:
            continue
        files = queue_files(path, topic_name, group)
        state = read_state(files, topic.partitions)
        if state is None:
            continue
        s = work_queue_stats(state, topic, files.size_bytes())
        found.setdefault(group, {})[topic_name] = {
            "backlog": s["backlog"],
            "in_flight": s["in_flight"],
            "redelivered": state.redelivered,
            "acked": s["acked"],
            "dead_lettered": s["dead_lettered"],
            "archived": s["archived"],
            "skipped": s["skipped"],
        }
    return found


# --- the metric names ------------------------------------------------------------------

Kind = Literal["gauge", "counter"]


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric: its name, kind, help text, unit and where its samples come from."""

    name: str
    """Prometheus name, without ``_total`` for counters (the exporters add it)."""
    kind: Kind
    help: str
    unit: str
    """OpenTelemetry unit (UCUM): ``"1"``, ``"By"``, ``"s"``, ``"{message}"``..."""
    read: Callable[[Metrics], Iterable[tuple[Labels, float]]]


def _partitions(key: str) -> Callable[[Metrics], Iterator[tuple[Labels, float]]]:
    def read(m: Metrics) -> Iterator[tuple[Labels, float]]:
        for topic, t in m["topics"].items():
            for p, figures in t["partitions"].items():
                # None: a figure the backend cannot know (a kafka:// store's segments).
                if figures[key] is not None:
                    yield {"topic": topic, "partition": str(p)}, figures[key]

    return read


def _group_partitions(key: str) -> Callable[[Metrics], Iterator[tuple[Labels, float]]]:
    def read(m: Metrics) -> Iterator[tuple[Labels, float]]:
        for group, topics in m["groups"].items():
            for topic, g in topics.items():
                for p, figures in g["partitions"].items():
                    if figures[key] is not None:
                        labels = {"group": group, "topic": topic, "partition": str(p)}
                        yield labels, figures[key]

    return read


def _group_members(m: Metrics) -> Iterator[tuple[Labels, float]]:
    for group, topics in m["groups"].items():
        for topic, g in topics.items():
            yield {"group": group, "topic": topic}, g["members"]


def _producer(key: str) -> Callable[[Metrics], Iterator[tuple[Labels, float]]]:
    def read(m: Metrics) -> Iterator[tuple[Labels, float]]:
        for name, s in m["producers"].items():
            yield {"producer": name}, s[key]

    return read


def _dropped(m: Metrics) -> Iterator[tuple[Labels, float]]:
    for name, s in m["producers"].items():
        for priority, count in sorted(s["dropped"].items()):
            yield {"producer": name, "priority": str(priority)}, count


def _queue(key: str) -> Callable[[Metrics], Iterator[tuple[Labels, float]]]:
    def read(m: Metrics) -> Iterator[tuple[Labels, float]]:
        for group, topics in m["work_queues"].items():
            for topic, q in topics.items():
                yield {"group": group, "topic": topic}, q[key]

    return read


def _recovered(key: str) -> Callable[[Metrics], Iterator[tuple[Labels, float]]]:
    def read(m: Metrics) -> Iterator[tuple[Labels, float]]:
        for kind, figures in m["recovery"].items():
            yield {"kind": kind}, figures[key]

    return read


_MSG = "{message}"

#: Every exported metric.
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "tidelog_partition_messages",
        "gauge",
        "Retained messages (end minus start offset).",
        _MSG,
        _partitions("messages"),
    ),
    MetricSpec(
        "tidelog_partition_size_bytes",
        "gauge",
        "Bytes of stored batches.",
        "By",
        _partitions("size_bytes"),
    ),
    MetricSpec(
        "tidelog_partition_start_offset",
        "gauge",
        "First retained offset.",
        "1",
        _partitions("start_offset"),
    ),
    MetricSpec(
        "tidelog_partition_end_offset",
        "gauge",
        "Next offset to be written.",
        "1",
        _partitions("end_offset"),
    ),
    MetricSpec(
        "tidelog_partition_segments", "gauge", "Segment files.", "1", _partitions("segments")
    ),
    MetricSpec(
        "tidelog_partition_dirty_ratio",
        "gauge",
        "Share of closed-segment bytes compaction has not seen yet.",
        "1",
        _partitions("dirty_ratio"),
    ),
    MetricSpec(
        "tidelog_partition_dirty_bytes",
        "gauge",
        "Bytes of closed segments compaction has not seen yet.",
        "By",
        _partitions("dirty_bytes"),
    ),
    MetricSpec(
        "tidelog_partition_compactions",
        "counter",
        "Compactions done over the partition's lifetime.",
        "1",
        _partitions("compactions"),
    ),
    MetricSpec(
        "tidelog_group_committed_offset",
        "gauge",
        "Committed offset (next offset to read).",
        "1",
        _group_partitions("committed"),
    ),
    MetricSpec(
        "tidelog_group_lag_messages",
        "gauge",
        "End offset minus committed offset.",
        _MSG,
        _group_partitions("lag_messages"),
    ),
    MetricSpec(
        "tidelog_group_lag_seconds",
        "gauge",
        "Age of the oldest unconsumed message; 0 when caught up.",
        "s",
        _group_partitions("lag_seconds"),
    ),
    MetricSpec(
        "tidelog_group_members", "gauge", "Live members of the consumer group.", "1", _group_members
    ),
    MetricSpec(
        "tidelog_producer_sent_messages",
        "counter",
        "Messages accepted by send().",
        _MSG,
        _producer("sent"),
    ),
    MetricSpec(
        "tidelog_producer_written_messages",
        "counter",
        "Messages written to the log.",
        _MSG,
        _producer("written"),
    ),
    MetricSpec(
        "tidelog_producer_failed_messages",
        "counter",
        "Messages whose write failed.",
        _MSG,
        _producer("failed"),
    ),
    MetricSpec(
        "tidelog_producer_dropped_messages",
        "counter",
        "Messages shed under backpressure, by priority.",
        _MSG,
        _dropped,
    ),
    MetricSpec(
        "tidelog_producer_buffered_messages",
        "gauge",
        "Messages waiting in the producer's buffer.",
        _MSG,
        _producer("buffered"),
    ),
    MetricSpec(
        "tidelog_producer_blocked_seconds",
        "counter",
        "Time send() spent blocked by backpressure.",
        "s",
        _producer("blocked_seconds"),
    ),
    MetricSpec(
        "tidelog_producer_high_watermark_hits",
        "counter",
        "Backpressure episodes (buffer reached its high watermark).",
        "1",
        _producer("high_watermark_hits"),
    ),
    MetricSpec(
        "tidelog_work_queue_backlog_messages",
        "gauge",
        "Unfinished messages not held by a member.",
        _MSG,
        _queue("backlog"),
    ),
    MetricSpec(
        "tidelog_work_queue_in_flight_messages",
        "gauge",
        "Messages held under an unexpired lock.",
        _MSG,
        _queue("in_flight"),
    ),
    MetricSpec(
        "tidelog_work_queue_redelivered_messages",
        "counter",
        "Messages handed out again (each redelivery counts).",
        _MSG,
        _queue("redelivered"),
    ),
    MetricSpec(
        "tidelog_work_queue_acked_messages",
        "counter",
        "Messages acknowledged.",
        _MSG,
        _queue("acked"),
    ),
    MetricSpec(
        "tidelog_work_queue_dead_lettered_messages",
        "counter",
        "Messages moved to the dead-letter topic.",
        _MSG,
        _queue("dead_lettered"),
    ),
    MetricSpec(
        "tidelog_work_queue_archived_messages",
        "counter",
        "Messages finished without a dead-letter topic.",
        _MSG,
        _queue("archived"),
    ),
    MetricSpec(
        "tidelog_recovery_events",
        "counter",
        "Recoveries that removed data, by kind.",
        "1",
        _recovered("events"),
    ),
    MetricSpec(
        "tidelog_recovery_removed_bytes",
        "counter",
        "Bytes recovery removed (truncated or moved aside), by kind.",
        "By",
        _recovered("bytes"),
    ),
)


def samples(metrics: Metrics) -> Iterator[tuple[MetricSpec, Labels, float]]:
    """Every sample of a :func:`collect` snapshot: ``(spec, labels, value)``."""
    for spec in METRICS:
        for labels, value in spec.read(metrics):
            yield spec, labels, float(value)


# --- Prometheus ------------------------------------------------------------------------


class _Snapshot:
    """One :func:`collect` shared by the callbacks of one collection.

    OpenTelemetry calls one callback per instrument; the snapshot is taken again once it is
    ``max_age`` seconds old.
    """

    def __init__(self, store: MetricsSource, max_age: float) -> None:
        self._store = store
        self._max_age = max_age
        self._lock = threading.Lock()
        self._taken = -float("inf")
        self._metrics: Metrics = {}

    def get(self) -> Metrics:
        with self._lock:
            now = time.monotonic()
            if now - self._taken >= self._max_age:
                self._metrics = self._store.metrics()
                self._taken = now
            return self._metrics


def _prometheus_collector(store: MetricsSource) -> Any:
    core = require(
        "tidelog.metrics.register_prometheus()",
        "prometheus_client.core",
        "prometheus_client",
        "prometheus",
    )

    def families(metrics: Metrics | None) -> Iterator[Any]:
        for spec in METRICS:
            labels = [] if metrics is None else list(spec.read(metrics))
            names = sorted({k for lbl, _ in labels for k in lbl})
            name = spec.name
            if spec.kind == "counter":
                family = core.CounterMetricFamily(name, spec.help, labels=names)
            else:
                family = core.GaugeMetricFamily(name, spec.help, labels=names)
            for lbl, value in labels:
                family.add_metric([lbl[k] for k in names], float(value))
            yield family

    class TidelogCollector:
        """Reads ``store.metrics()`` at every scrape."""

        def collect(self) -> Iterator[Any]:
            if store.closed:
                return
            yield from families(store.metrics())

        def describe(self) -> Iterator[Any]:
            # Names only, so registering does not read the store.
            yield from families(None)

    return TidelogCollector()


def register_prometheus(store: MetricsSource, registry: Any = None) -> Any:
    """Exposes ``store.metrics()`` to ``prometheus_client``, read at every scrape.

    Args:
        store: An open store. After it closes, scrapes return none of its metrics.
        registry: A ``prometheus_client.CollectorRegistry``; the default registry
            (``prometheus_client.REGISTRY``) if None.

    Returns:
        The collector (pass it to ``registry.unregister`` to stop).

    Raises:
        MissingDependencyError: ``prometheus_client`` is not installed.
    """
    collector = _prometheus_collector(store)
    if registry is None:
        registry = require(
            "tidelog.metrics.register_prometheus()",
            "prometheus_client",
            "prometheus_client",
            "prometheus",
        ).REGISTRY
    registry.register(collector)
    return collector


def prometheus_text(store: MetricsSource) -> bytes:
    """``store.metrics()`` in the Prometheus text exposition format.

    Raises:
        MissingDependencyError: ``prometheus_client`` is not installed.
    """
    client = require(
        "tidelog.metrics.prometheus_text()", "prometheus_client", "prometheus_client", "prometheus"
    )
    registry = client.CollectorRegistry()
    register_prometheus(store, registry)
    text: bytes = client.generate_latest(registry)
    return text


def serve_prometheus(store: MetricsSource, host: str, port: int) -> tuple[Any, threading.Thread]:
    """Serves ``store.metrics()`` over HTTP for Prometheus (any path answers the metrics).

    Args:
        store: An open store.
        host: Address to listen on (``"127.0.0.1"``).
        port: TCP port (0 picks a free one; see the returned server's ``server_port``).

    Returns:
        ``(server, thread)`` as ``prometheus_client.start_http_server`` returns them; call
        ``server.shutdown()`` to stop.

    Raises:
        MissingDependencyError: ``prometheus_client`` is not installed.
        OSError: The address is taken or cannot be bound.
    """
    client = require(
        "tidelog.metrics.serve_prometheus()", "prometheus_client", "prometheus_client", "prometheus"
    )
    registry = client.CollectorRegistry()
    register_prometheus(store, registry)
    server, thread = client.start_http_server(port, addr=host, registry=registry)
    return server, thread


# --- OpenTelemetry ---------------------------------------------------------------------


def register_opentelemetry(
    store: MetricsSource, meter: Any = None, *, max_age: float = 1.0
) -> list[Any]:
    """Exposes ``store.metrics()`` as OpenTelemetry observable instruments.

    Gauges become observable gauges and counters observable counters, named as for
    Prometheus (counters without ``_total``, which OpenTelemetry's Prometheus exporter
    adds), with the same attributes. One collection reads the store once for all
    instruments.

    Args:
        store: An open store. After it closes, the instruments observe nothing.
        meter: An ``opentelemetry.metrics.Meter``; ``get_meter("tidelog")`` of the global
            meter provider if None.
        max_age: A snapshot younger than this many seconds is reused by the instruments'
            callbacks instead of reading the store again.

    Returns:
        The instruments created.

    Raises:
        MissingDependencyError: ``opentelemetry-api`` is not installed.
    """
    otel = require(
        "tidelog.metrics.register_opentelemetry()",
        "opentelemetry.metrics",
        "opentelemetry-api",
        "opentelemetry",
    )
    if meter is None:
        meter = otel.get_meter("tidelog")
    snapshot = _Snapshot(store, max_age)

    def callback(spec: MetricSpec) -> Callable[[Any], Iterator[Any]]:
        def observe(options: Any) -> Iterator[Any]:
            if store.closed:
                return
            for labels, value in spec.read(snapshot.get()):
                yield otel.Observation(value, labels)

        return observe

    instruments = []
    for spec in METRICS:
        create = (
            meter.create_observable_counter
            if spec.kind == "counter"
            else meter.create_observable_gauge
        )
        instruments.append(
            create(spec.name, callbacks=[callback(spec)], unit=spec.unit, description=spec.help)
        )
    return instruments
