"""Consumer groups on Kafka: one confluent-kafka consumer per member.

Members use Kafka's group protocol (``group.protocol=consumer``, KIP-848) to split the
topic's partitions. Offsets are stored and committed explicitly, so the three delivery modes
mean what they mean locally: at-most-once commits before handing messages out,
at-least-once commits what the application moved past (next poll, next iteration, close or
``commit()``), exactly-once commits only through a transaction
(``send_offsets_to_transaction``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from types import TracebackType
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from tidelog import _core
from tidelog.kafka._common import TIMEOUT, StoreLink, check_partition, consume_ready
from tidelog.kafka._errors import (
    MAX_POLL_EXCEEDED,
    PARTITION_EOF,
    partitions_checked,
    raise_for,
    retrying,
    translated,
)
from tidelog.kafka.messages import KafkaMessage, from_consume
from tidelog.kafka.positions import Positions

if TYPE_CHECKING:
    from tidelog.kafka.producer import KafkaProducer

__all__ = ["KafkaConsumer"]

_DELIVERY = ("at-most-once", "at-least-once", "exactly-once")


class KafkaConsumer:
    """A member of a Kafka consumer group (see :meth:`tidelog.Store.consumer`).

    Args:
        store: The store.
        topic: The topic to consume.
        group: The group's name (``group.id``).
        delivery: ``"at-least-once"`` (default), ``"at-most-once"`` or ``"exactly-once"``.
        start: Where a partition without a committed offset starts (``auto.offset.reset``).
        max_poll_messages: Most messages one ``poll`` hands out.
        on_assign: Called with the partitions this member gains.
        on_revoke: Called with the partitions this member loses.
        config: Further librdkafka consumer options.
    """

    def __init__(
        self,
        store: StoreLink,
        topic: str,
        group: str,
        *,
        delivery: str = "at-least-once",
        start: str = "earliest",
        max_poll_messages: int = 500,
        lease_seconds: float | None = None,
        on_assign: Callable[[list[int]], None] | None = None,
        on_revoke: Callable[[list[int]], None] | None = None,
        auto_offset_reset: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        if delivery not in _DELIVERY:
            raise _core.InvalidConfigError(f"delivery must be one of {_DELIVERY}, got {delivery!r}")
        if start not in ("earliest", "latest"):
            raise _core.InvalidConfigError(f"start must be 'earliest' or 'latest', got {start!r}")
        if not isinstance(group, str) or not group:
            raise _core.InvalidConfigError(f"group must be a non-empty str, got {group!r}")
        if lease_seconds is not None:
            raise _core.InvalidConfigError(
                "lease_seconds is the broker's group.consumer.session.timeout.ms on Kafka; "
                "set it on the broker or the group"
            )
        self._store = store
        self._topic = store.topic(topic)
        self._group = group
        self._delivery = delivery
        self._start = start
        self._max = max_poll_messages
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._assigned: set[int] = set()
        self._paused: set[int] = set()
        # Next offset after the messages handed out and not yet committed, per partition.
        self._delivered: dict[int, int] = {}
        # At-most-once: the offset this member last committed, per partition. A fetch
        # commits past all it brought (fetch()), once, so that handing it out (one message
        # at a time when iterating) makes no round trip: tidelog.aio hands out on the event
        # loop's thread. What was committed past and not handed out is given back (the
        # commit moved back to its first message) wherever it would be dropped: a clean
        # close, a seek, a revocation (``_give_back``).
        self._ahead: dict[int, int] = {}
        # An error a fetch returned after messages: raised by the next fetch (see _fetch).
        self._fetch_error: KafkaError | None = None
        # Fetched, not handed out yet: iterating hands out one message at a time, and only
        # what it handed out counts as delivered (for commits, close and transactions).
        self._ready: deque[KafkaMessage] = deque()
        # Fetched messages of paused partitions, out of ``_ready`` while paused. librdkafka
        # counts them as consumed (it fetches on after them once resumed), so they are kept
        # here, never handed out or committed meanwhile.
        self._held_by_pause: dict[int, list[KafkaMessage]] = {}
        # pause() and resume() mark partitions and count the change, and settle it at once
        # unless a fetch holds ``_lock``: then the calls that hand out or fetch (under the
        # lock) settle it when the count moved (``_settle``): they pause and resume the
        # partitions in librdkafka and move messages between ``_ready`` and
        # ``_held_by_pause``. So neither waits for a fetch that tidelog.aio runs in a
        # thread, which holds the lock (and the consumer: confluent-kafka makes one call on
        # a consumer at a time) for as long as librdkafka waits.
        self._pause_changes = 0
        self._settled = 0
        self._paused_in_client: set[int] = set()
        # seek() records the new position there and applies it at once, unless a fetch
        # holds ``_lock``: that fetch applies it then, under the lock, before anything more
        # is handed out, so seek never waits for it. tidelog.aio's seeks whose offset needs
        # a round trip wait there until the next fetch makes it in its thread; nothing of
        # their partitions is handed out meanwhile.
        self._positions = Positions(self._topic, store)
        self._closed = False
        # Every call on ``_consumer`` is made under this lock, so a thread that takes it
        # without waiting (tidelog.aio's hand-outs, on the event loop's thread) finds the
        # consumer free: confluent-kafka makes one call on a consumer at a time, and a call
        # from another thread would wait for a fetch for as long as librdkafka waits.
        self._lock = threading.RLock()
        self._consumer = Consumer(
            store.client_config(
                **{
                    "group.id": group,
                    "group.protocol": "consumer",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": start,
                    "isolation.level": "read_committed",
                    **(config or {}),
                }
            )
        )
        with translated(f"joining group {group!r}"):
            self._consumer.subscribe(
                [topic],
                on_assign=self._assigned_cb,
                on_revoke=self._revoked_cb,
                on_lost=self._lost_cb,
            )

    # -- group membership --------------------------------------------------------------------

    def _assigned_cb(self, _c: Any, parts: list[TopicPartition]) -> None:
        gained = sorted(tp.partition for tp in parts)
        self._assigned.update(gained)
        if self._on_assign is not None and gained:
            self._on_assign(gained)

    def _revoked_cb(self, _c: Any, parts: list[TopicPartition]) -> None:
        # The group waits for this callback before it gives the partitions to another
        # member (KIP-848's revocation, which the member acknowledges after it; an eager
        # classic rebalance revokes everything before the new assignment): the commits
        # here are the last ones of this owner, and the next owner reads them.
        self._revoked(sorted(tp.partition for tp in parts), gone=False)

    def _lost_cb(self, _c: Any, parts: list[TopicPartition]) -> None:
        # Lost without a revocation (session timed out, member fenced): the partitions
        # may be another member's already, which may have handed out from the fetch's
        # commit on. At-most-once gives nothing back then, or a later owner would hand
        # those messages out again: what this member fetched and did not hand out is lost,
        # as at-most-once allows.
        self._revoked(sorted(tp.partition for tp in parts), gone=True)

    def _revoked(self, lost: list[int], gone: bool) -> None:
        if self._delivery == "at-most-once" and not gone:
            # Lost already if this fails (as at-least-once's commit below).
            with contextlib.suppress(_core.TidelogError):
                self._give_back(lost)
        # At-least-once: what the application moved past is committed while still owned.
        if self._delivery == "at-least-once":
            owned = {p: o for p, o in self._delivered.items() if p in lost}
            if owned:
                # Lost already if this fails: the next owner gets these messages again.
                with contextlib.suppress(_core.TidelogError):
                    self._commit_now(owned)
        # A pause ends with the ownership (as in Kafka's clients), but librdkafka keeps it
        # on the partition: once assigned to this member again, it would never be fetched.
        unpause = sorted(self._paused_in_client.intersection(lost))
        if unpause:
            name = self._topic.name
            with contextlib.suppress(_core.TidelogError), translated("resume"):
                self._consumer.resume([TopicPartition(name, p) for p in unpause])
        for p in lost:
            self._assigned.discard(p)
            self._delivered.pop(p, None)
            self._ahead.pop(p, None)
            self._paused.discard(p)
            self._paused_in_client.discard(p)
        self._positions.forget(lost)
        self._drop_ready(lost)
        if self._on_revoke is not None and lost:
            self._on_revoke(lost)

    @property
    def topic(self) -> str:
        """The topic consumed."""
        return str(self._topic.name)

    @property
    def group(self) -> str:
        """The group's name."""
        return self._group

    @property
    def delivery(self) -> str:
        """The delivery mode."""
        return self._delivery

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._closed

    @property
    def max_poll_messages(self) -> int:
        """Most messages one :meth:`poll` hands out."""
        return self._max

    def assignment(self) -> list[int]:
        """The partitions this member owns, sorted.

        Raises:
            StoreClosedError: The consumer is closed (as Kafka's Java client refuses it).
        """
        self._check_open()
        return sorted(self._assigned)

    # -- polling -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise _core.StoreClosedError(
                f"consumer of group {self._group!r} on topic {self._topic.name!r} is closed; "
                "open a new one to consume again"
            )

    def poll(self, max_messages: int | None = None, timeout: float = 1.0) -> list[KafkaMessage]:
        """Up to ``max_messages`` messages, waiting at most ``timeout`` seconds for any.

        Raises:
            InvalidConfigError: Exactly-once, and the previous messages were not committed
                through a transaction yet.
        """
        self._check_open()
        n = self._max if max_messages is None else max_messages
        with self._lock:
            if self._positions.checked or self._positions.unchecked:
                self._take_seeks()
            self._before_taking()
            if self._settled != self._pause_changes:
                self._settle()
            if not self._ready:
                self._took(self._fetch(n, timeout))
            ready = self._ready
            count = min(n, len(ready))
            if self._delivery == "at-most-once":
                # Committed past before they leave ``_ready``: if the commit fails, the
                # poll raises and the next one hands them out (after its commit).
                self._commit_ahead(self._next_offsets(list(islice(ready, count))))
            out = [ready.popleft() for _ in range(count)]
            self._hand_out(out)
            return out

    def next_ready(self) -> KafkaMessage | None:
        """The next fetched message, handed out as iterating does, or None.

        Never waits and makes no round trip (for :mod:`tidelog.aio`, which calls it on the
        event loop's thread and fetches with :meth:`fetch` in another): None when nothing is
        fetched, or when :meth:`fetch` must come first (another thread uses the member, a
        seek's offset is unchecked, or at-most-once has a seek to apply, which gives back
        a commit, or has not committed the message yet).

        Raises:
            InvalidConfigError: Exactly-once, and the previous message was not committed
                through a transaction yet.
        """
        self._check_open()
        if not self._lock.acquire(blocking=False):
            return None  # a fetch in another thread holds it while librdkafka waits
        try:
            if self._positions.unchecked:
                return None  # fetch() checks those seeks first (a round trip)
            if self._positions.checked:
                if self._delivery == "at-most-once":
                    return None  # fetch() applies it: giving back is a round trip
                self._apply_seeks()
            if self._settled != self._pause_changes:
                self._settle()
            if not self._ready:
                return None
            # At-least-once commits when the next fetch shows the application moved past
            # these (as a poll does), not per message.
            self._check_step_committed()
            message = self._ready[0]
            if self._delivery == "at-most-once" and self._ahead.get(message.partition, -1) <= (
                message.offset
            ):
                return None  # fetch() commits past it first
            self._ready.popleft()
            self._hand_out([message])
            return message
        finally:
            self._lock.release()

    def take_ready(self, max_messages: int) -> list[KafkaMessage] | None:
        """Up to ``max_messages`` fetched messages, handed out as :meth:`poll` does.

        :meth:`next_ready` for a batch: never waits and makes no round trip. None when
        :meth:`fetch` must come first, for :meth:`next_ready`'s reasons or because
        at-least-once has not committed what the application moved past yet.

        Raises:
            InvalidConfigError: Exactly-once, and the previous messages were not committed
                through a transaction yet.
        """
        self._check_open()
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._positions.unchecked:
                return None
            if self._positions.checked:
                if self._delivery == "at-most-once":
                    return None  # as in next_ready
                self._apply_seeks()
            if self._delivery == "at-least-once" and self._delivered:
                return None  # fetch() commits what the application moved past
            self._check_step_committed()
            if self._settled != self._pause_changes:
                self._settle()
            ready = self._ready
            count = min(max_messages, len(ready))
            if self._delivery != "at-most-once":
                out = [ready.popleft() for _ in range(count)]
            else:
                out = list(islice(ready, count))
                if self._not_committed_ahead(self._next_offsets(out)):
                    return None  # fetch() commits past them first
                for _ in range(count):
                    ready.popleft()
            self._hand_out(out)
            return out
        finally:
            self._lock.release()

    def fetch(self, timeout: float, max_messages: int | None = None) -> bool:
        """Waits up to ``timeout`` seconds for messages to hand out; True if there are some.

        Commits first what at-least-once moved past, as :meth:`poll` does. What it fetches
        is handed out later, by :meth:`next_ready`, :meth:`take_ready` or :meth:`poll`;
        at-most-once commits past the first ``max_messages`` of it here (all of it by
        default: iterating then makes one commit per fetch), so that handing them out
        makes no round trip. If that commit fails, none of them is handed out; the next
        fetch commits again.

        Raises:
            OffsetOutOfRangeError: A :meth:`seek_nowait` was out of range (it is dropped;
                the partition reads on from where it was).
        """
        self._check_open()
        with self._lock:
            if self._positions.checked or self._positions.unchecked:
                self._take_seeks()
            self._before_taking()
            if self._settled != self._pause_changes:
                self._settle()
            if not self._ready:
                self._took(self._fetch(self._max, timeout))
            if self._delivery == "at-most-once" and self._ready:
                ahead = self._ready if max_messages is None else islice(self._ready, max_messages)
                self._commit_ahead(self._next_offsets(list(ahead)))
            return bool(self._ready)

    def __iter__(self) -> Iterator[KafkaMessage]:
        # Raises StoreClosedError once closed (next_ready and fetch check), as poll does.
        while True:
            message = self.next_ready()
            if message is not None:
                yield message
            else:
                self.fetch(1.0)

    def _before_taking(self) -> None:
        """Before a poll or a fetch: at-least-once commits what the application moved past.

        Exactly-once refuses more input while the last messages are not committed through
        a transaction (:meth:`_check_step_committed`).
        """
        if self._delivery == "at-least-once" and self._delivered:
            # Refused if the group dropped this member (it did not poll within
            # max.poll.interval.ms) or moved on: as a local member past its lease, it polls
            # on. The fetch serves the loss (on_lost forgets these; the next owner hands
            # them out again, as at-least-once allows) and joins again; a member that still
            # owns them commits them at its next poll.
            with contextlib.suppress(_core.RebalanceError):
                self._commit_now(dict(self._delivered))
        self._check_step_committed()

    def _check_step_committed(self) -> None:
        if self._delivery == "exactly-once" and self._delivered:
            raise _core.InvalidConfigError(
                "exactly-once: commit the messages handed out through "
                "store.transaction(producer, consumer) before taking more"
            )

    def _fetch(self, n: int, timeout: float) -> list[KafkaMessage]:
        context = f"polling {self._topic.name!r} in group {self._group!r}"
        if self._fetch_error is not None:
            err, self._fetch_error = self._fetch_error, None
            raise_for(err, context)
        deadline = time.monotonic() + timeout
        raw = self._consume(n, timeout, context)
        out = from_consume(raw)
        if not out and raw and all(_dropped(m) for m in raw):
            # librdkafka left the group as this member did not poll within
            # max.poll.interval.ms, and says so once; its next poll joins again, as a local
            # member past its lease does at its next poll and as Kafka's Java client does,
            # without an error. The loss is served as a revocation (on_lost, then on_assign
            # once assigned again), so that what each delivery mode promises holds. (Looked
            # for only when a fetch brought no message: the common fetch scans nothing.)
            raw = self._consume(n, max(deadline - time.monotonic(), 0.0), context)
            out = from_consume(raw)
        if out:
            self._positions.fetched(self._next_offsets(out))
        if len(out) != len(raw):
            for m in raw:
                err = m.error()
                if err is not None and err.code() not in (PARTITION_EOF, MAX_POLL_EXCEEDED):
                    if not out:
                        raise_for(err, context)
                    # librdkafka moved past the messages that came with the error: raising
                    # now would drop them. As Kafka's consumers do, they are handed out and
                    # the error is raised by the next fetch.
                    self._fetch_error = err
                    break
        return out

    def _consume(self, n: int, timeout: float, context: str) -> list[Any]:
        try:
            return consume_ready(self._consumer, n, timeout)
        except KafkaException as e:
            with translated(context):
                raise e

    def _took(self, fetched: list[KafkaMessage]) -> None:
        """Puts what a fetch brought in ``_ready`` (``_held_by_pause`` for paused partitions).

        A seek recorded while the fetch waited drops what it brought of that partition:
        read from the old position.
        """
        self._ready.extend(self._hold_paused(fetched) if self._paused else fetched)
        if self._positions.checked:
            self._apply_seeks()

    def _hand_out(self, out: list[KafkaMessage]) -> None:
        """Counts ``out``, taken off ``_ready``, as delivered.

        Not at-most-once: its callers commit past messages while they are still in
        ``_ready``, so that a failed commit hands out nothing and loses nothing.
        """
        if self._delivery != "at-most-once":
            self._delivered.update(self._next_offsets(out))

    def _next_offsets(self, messages: list[KafkaMessage]) -> dict[int, int]:
        """Per partition, the offset after the last of ``messages``: past them."""
        # Messages of one partition come in offset order: walking back stops once every
        # owned partition is seen (usually after a message or two).
        seen: dict[int, int] = {}
        owned = len(self._assigned)
        for msg in reversed(messages):
            p = msg.partition
            if p not in seen:
                seen[p] = msg.offset + 1
                if owned and len(seen) >= owned:
                    break
        return seen

    def _not_committed_ahead(self, offsets: dict[int, int]) -> dict[int, int]:
        """The part of ``offsets`` past what at-most-once committed already."""
        ahead = self._ahead
        return {p: o for p, o in offsets.items() if ahead.get(p, -1) < o}

    def _commit_ahead(self, offsets: dict[int, int]) -> None:
        """At-most-once: commits ``offsets`` where no commit reached them yet."""
        todo = self._not_committed_ahead(offsets)
        if todo:
            self._commit_now(todo)
            self._ahead.update(todo)

    def _give_back(self, partitions: Iterable[int]) -> None:
        """At-most-once: moves the commit back to what was fetched and not handed out.

        Per partition of ``partitions``, to its first message in ``_ready`` or held by a
        pause (under ``_lock``). The fetch committed past all it brought; this puts the
        commit where a commit per message would have left it, so the group's next owner of
        the partition (or this member, after a seek) hands those messages out, once. Kafka
        applies a commit that moves back, as it applies any commit of the partition's owner.
        """
        wanted = set(partitions) & self._assigned
        first = {p: held[0].offset for p, held in self._held_by_pause.items() if p in wanted}
        for m in self._ready:
            p = m.partition
            if p in wanted and m.offset < first.get(p, m.offset + 1):
                first[p] = m.offset
        back = {p: o for p, o in first.items() if self._ahead.get(p, -1) > o}
        if back:
            self._commit_now(back)
            self._ahead.update(back)

    def _drop_ready(self, partitions: Iterable[int]) -> None:
        """Forgets fetched messages of ``partitions`` (their position moved)."""
        gone = set(partitions)
        if gone and self._ready:
            kept = [m for m in self._ready if m.partition not in gone]
            self._ready.clear()
            self._ready.extend(kept)
        for p in gone:
            self._held_by_pause.pop(p, None)

    def _hold_paused(self, fetched: list[KafkaMessage]) -> list[KafkaMessage]:
        """Keeps back what a fetch brought of paused partitions; returns the rest.

        librdkafka drops what it had fetched of a partition when it is paused, but a fetch
        racing the pause may still bring some: kept in order behind what was held before.
        """
        paused, out = self._paused, []
        for m in fetched:
            if m.partition in paused:
                self._held_by_pause.setdefault(m.partition, []).append(m)
            else:
                out.append(m)
        return out

    def _settle(self) -> None:
        """Brings ``_ready`` and ``_held_by_pause`` in step with pause() and resume().

        Called under ``_lock`` once ``_pause_changes`` moved: fetched messages of paused
        partitions are held back; those of resumed ones go first in ``_ready``, in order.
        """
        # Read first: a pause or resume from now on is settled by the next hand-out.
        self._settled = self._pause_changes
        # pause() checks the assignment without the lock: a revocation between its check
        # and its mark leaves a partition marked that this member no longer owns.
        self._paused.intersection_update(self._assigned)
        paused, ready = set(self._paused), self._ready  # a copy: pause() may change it
        name, client = self._topic.name, self._paused_in_client
        if paused - client:
            with translated("pause"):
                self._consumer.pause([TopicPartition(name, p) for p in sorted(paused - client)])
        if client - paused:
            with translated("resume"):
                self._consumer.resume([TopicPartition(name, p) for p in sorted(client - paused)])
        self._paused_in_client = paused
        for p in [p for p in self._held_by_pause if p not in paused]:
            ready.extendleft(reversed(self._held_by_pause.pop(p)))
        if paused and ready:
            kept = self._hold_paused(list(ready))
            if len(kept) != len(ready):
                ready.clear()
                ready.extend(kept)

    # -- offsets -----------------------------------------------------------------------------

    def _commit_now(self, offsets: dict[int, int]) -> None:
        name = self._topic.name
        foreign = sorted(set(offsets) - self._assigned)
        if foreign:
            raise _core.RebalanceError(
                f"group {self._group!r}: this member does not own partitions {foreign} of "
                f"{name!r} (anymore)"
            )
        with translated(f"committing offsets of group {self._group!r}"):
            result = self._consumer.commit(
                offsets=[TopicPartition(name, p, o) for p, o in offsets.items()],
                asynchronous=False,
            )
        for tp in result or []:
            raise_for(tp.error, f"committing offsets of group {self._group!r}")
        for p, o in offsets.items():
            if self._delivered.get(p) == o:
                del self._delivered[p]

    def commit(self, offsets: dict[int, int] | None = None, metadata: str = "") -> None:
        """Commits every message handed out so far, or ``offsets`` (next offset per partition).

        Raises:
            RebalanceError: This member does not own a partition being committed.
        """
        self._check_open()
        if self._delivery == "exactly-once":
            raise _core.InvalidConfigError(
                "an exactly-once consumer commits through store.transaction(producer, consumer)"
            )
        with self._lock:
            if offsets is None:
                if self._delivered:
                    self._commit_now(dict(self._delivered))
                return
            self._commit_now(dict(offsets))

    def committed(self) -> dict[int, int]:
        """The group's committed offsets (next offset to read) per partition that has one.

        Raises:
            StoreClosedError: The consumer is closed (as Kafka's clients refuse it).
        """
        self._check_open()
        name = self._topic.name
        with self._lock:
            tps = retrying(
                lambda t: partitions_checked(
                    self._consumer.committed(
                        [TopicPartition(name, p) for p in range(self._topic.partitions)], timeout=t
                    )
                ),
                f"reading offsets of group {self._group!r}",
            )
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}

    def lag(self) -> dict[int, int]:
        """Per partition: end offset minus the committed offset (or the start position).

        Raises:
            StoreClosedError: The consumer is closed (as Kafka's clients refuse it).
        """
        self._check_open()
        committed = self.committed()
        out = {}
        for p in range(self._topic.partitions):
            start, end = self._store.watermarks(self._topic.name, p)
            base = committed.get(p, start if self._start == "earliest" else end)
            out[p] = max(0, end - base)
        return out

    def position(self, partition: int) -> int:
        """The offset of the next message this member hands out from ``partition``.

        As Kafka's ``position``: messages fetched and not handed out yet (the rest of a
        fetch that iterating hands out one at a time, or what :meth:`pause` holds back)
        come first. -1 while the member has not fetched from ``partition`` yet.

        Raises:
            RebalanceError: ``partition`` is not assigned to this member (as Kafka's Java
                client refuses it; librdkafka would answer with a stale position or -1).
        """
        self._require_assigned(partition)
        pending = self._positions.pending_position(partition)
        if pending is not None:
            return pending
        # Read without ``_lock``, which a fetch in a thread of tidelog.aio holds while it
        # waits: copies, as that thread may be changing them.
        ready = next((m.offset for m in tuple(self._ready) if m.partition == partition), None)
        held = self._held_by_pause.get(partition)
        if held and (ready is None or held[0].offset < ready):
            return held[0].offset
        if ready is not None:
            return ready
        return self._positions.last_position(partition)

    def seek(self, partition: int, offset: int) -> None:
        """Makes the next poll read ``partition`` from ``offset`` (an owned partition).

        Never waits for a fetch running in another thread (tidelog.aio's): that fetch
        applies the seek when it ends, and hands out nothing it read from the old position.
        The range check asks the broker for the partition's offsets (a round trip).

        Raises:
            OffsetOutOfRangeError: ``offset`` is before the partition's start or past its
                end offset (as locally; librdkafka would reset the partition to ``start``).
            RebalanceError: ``partition`` is not assigned to this member.
        """
        self._require_assigned(partition)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"offset must be int, got {type(offset).__name__}")
        self._positions.check_range(partition, offset)
        self._seek_in_range(partition, offset)

    def _seek_in_range(self, partition: int, offset: int) -> None:
        """Records a seek to an offset known to be in range, and applies it if it can."""
        self._positions.seek(partition, offset)
        if self._lock.acquire(blocking=False):
            try:
                self._apply_seeks()
            finally:
                self._lock.release()

    def seek_nowait(self, partition: int, offset: int) -> None:
        """:meth:`seek` without a round trip, for :mod:`tidelog.aio`'s event loop.

        The next :meth:`fetch` or :meth:`poll` checks the range in its thread and applies
        the seek, or drops it and raises :class:`OffsetOutOfRangeError` (as Kafka's Java
        client raises an out-of-range position from ``poll``); nothing of ``partition``
        is handed out meanwhile, and :meth:`position` says ``offset``.
        """
        self._require_assigned(partition)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"offset must be int, got {type(offset).__name__}")
        self._positions.seek_unchecked(partition, offset)

    def _take_seeks(self) -> None:
        """Applies what seek() and seek_nowait() recorded (under ``_lock``).

        tidelog.aio's are resolved first (round trips): an offset out of range is dropped
        and raised once the others are applied.
        """
        error = self._positions.resolve() if self._positions.unchecked else None
        if self._positions.checked:
            self._apply_seeks()
        if error is not None:
            raise error

    def _apply_seeks(self) -> None:
        """Applies what seek() recorded (under ``_lock``)."""
        seeks = {p: o for p, o in self._positions.take().items() if p in self._assigned}
        if self._delivery == "at-most-once" and seeks:
            # The seek drops what was fetched and not handed out, which the fetch committed
            # past: the commit goes back to its first message. The seek commits nothing of
            # its own, as in Kafka; the next fetch commits from the new position, back or
            # forward. If this fails, the fetch's commit stands until that next fetch's:
            # only a close before it loses those messages, as at-most-once allows.
            with contextlib.suppress(_core.TidelogError):
                self._give_back(seeks)
        # What was delivered or fetched before the seek is neither committed nor handed out
        # (at-most-once commits again from the new position).
        for p in seeks:
            self._delivered.pop(p, None)
            self._ahead.pop(p, None)
        self._drop_ready(seeks)
        for p, offset in seeks.items():
            # The fetch that waited may have taken the mark off (it brought old messages).
            self._positions.moved(p, offset)
            with translated(f"seeking partition {p}"):
                self._consumer.seek(TopicPartition(self._topic.name, p, offset))

    def seek_to_timestamp(self, timestamp_ms: int) -> None:
        """Seeks every owned partition to its first message at or after ``timestamp_ms``."""
        for p in self.assignment():
            found = self._topic.offset_for_timestamp(p, timestamp_ms)
            # The broker's answers: in range, no check needed.
            self._seek_in_range(p, self._topic.end_offset(p) if found is None else found)

    def seek_to_timestamp_nowait(self, timestamp_ms: int) -> None:
        """:meth:`seek_to_timestamp` without a round trip, for :mod:`tidelog.aio`'s loop.

        The next :meth:`fetch` or :meth:`poll` looks the offsets up in its thread and
        applies them; nothing of the owned partitions is handed out meanwhile, and
        :meth:`position` says -1 (unknown) for them until then.
        """
        if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int):
            raise TypeError(f"timestamp_ms must be int, got {type(timestamp_ms).__name__}")
        self._positions.seek_to_timestamp_unchecked(self.assignment(), timestamp_ms)

    def pause(self, partition: int) -> None:
        """Stops handing out messages of ``partition`` until :meth:`resume`.

        As Kafka's consumers: nothing more is fetched from it, and what was fetched and not
        handed out yet is held back, not dropped: :meth:`resume` hands it out first, in
        order. It is not committed meanwhile (so closing leaves it to the group).
        At-most-once committed past it when it was fetched: closing, a seek or a
        revocation of the partition moves the commit back to its first message, so the
        group hands it out (a member that crashes meanwhile loses it, as at-most-once may).

        Raises:
            RebalanceError: ``partition`` is not assigned to this member (Kafka's clients
                refuse it: "No current assignment for partition").
        """
        self._require_assigned(partition)
        self._paused.add(partition)
        self._pause_changes += 1
        self._settle_now()

    def _settle_now(self) -> None:
        """Settles pause() and resume() now, unless a fetch in another thread holds the lock.

        That fetch's hand-out, or the next fetch, settles them then.
        """
        if self._lock.acquire(blocking=False):
            try:
                self._settle()
            finally:
                self._lock.release()

    def resume(self, partition: int) -> None:
        """Hands out and fetches ``partition``'s messages again (what pause held back first).

        Raises:
            RebalanceError: ``partition`` is not assigned to this member.
        """
        self._require_assigned(partition)
        self._paused.discard(partition)
        self._pause_changes += 1
        self._settle_now()

    def paused(self) -> list[int]:
        """The paused partitions.

        Raises:
            StoreClosedError: The consumer is closed (as Kafka's Java client refuses it).
        """
        self._check_open()
        return sorted(self._paused)

    def _require_assigned(self, partition: int) -> None:
        self._check_open()
        check_partition(self._topic, partition)
        if partition not in self._assigned:
            raise _core.RebalanceError(
                f"partition {partition} of {self._topic.name!r} is not assigned to this member "
                f"(it owns {self.assignment()})"
            )

    # -- transactions (used by KafkaTransaction) ---------------------------------------------

    def transaction_send_offsets(self, producer: KafkaProducer) -> dict[int, int]:
        """Adds the positions after the messages handed out to ``producer``'s transaction."""
        offsets = dict(self._delivered)
        foreign = sorted(set(offsets) - self._assigned)
        if foreign:
            raise _core.RebalanceError(
                f"group {self._group!r} lost partitions {foreign} during the transaction"
            )
        if offsets:
            with self._lock:
                metadata = self._consumer.consumer_group_metadata()
            with translated("adding offsets to the transaction"):
                producer.native.send_offsets_to_transaction(
                    [TopicPartition(self._topic.name, p, o) for p, o in offsets.items()],
                    metadata,
                    TIMEOUT,
                )
        return offsets

    def transaction_committed(self, offsets: dict[int, int]) -> None:
        """The transaction carrying ``offsets`` committed."""
        for p, o in offsets.items():
            if self._delivered.get(p) == o:
                del self._delivered[p]

    def transaction_aborted(self) -> None:
        """The transaction aborted: rewind to the committed offsets, to read the input again."""
        committed = self.committed()
        with self._lock:
            rewind = list(self._delivered)
            self._delivered.clear()
            self._drop_ready(rewind)
            for p in rewind:
                if p in self._assigned:
                    start = self._topic.start_offset(p)
                    base = committed.get(p, start if self._start == "earliest" else None)
                    if base is None:
                        base = self._topic.end_offset(p)
                    with translated("rewinding after an abort"):
                        self._consumer.seek(TopicPartition(self._topic.name, p, base))
                    self._positions.moved(p, base)

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Commits what at-least-once moved past, then leaves the group; idempotent.

        Fetched messages not handed out yet are dropped uncommitted (the group's next
        member gets them): at-most-once committed past them when it fetched, and moves its
        commit back to the first of them here (a member that crashes instead loses them,
        as at-most-once may). Afterwards every call that takes messages (iterating,
        :meth:`poll`, :meth:`fetch`, :meth:`next_ready`), moves positions or asks about
        offsets or partitions (:meth:`committed`, :meth:`lag`, :meth:`position`,
        :meth:`assignment`, :meth:`paused`) raises :class:`StoreClosedError`.
        """
        if self._closed:
            return
        with self._lock:
            try:
                if self._delivery == "at-least-once" and self._delivered:
                    # No longer ours if this fails: the new owner delivers them again.
                    with contextlib.suppress(_core.RebalanceError):
                        self._commit_now(dict(self._delivered))
                elif self._delivery == "at-most-once":
                    # No longer ours if this fails: the new owner started from the
                    # fetch's commit, and those messages are lost (at-most-once allows).
                    with contextlib.suppress(_core.RebalanceError):
                        self._give_back(self._assigned)
            finally:
                self._closed = True
                self._ready.clear()
                self._held_by_pause.clear()
                self._consumer.close()
                self._store.forget(self)

    def __enter__(self) -> KafkaConsumer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _dropped(raw: Any) -> bool:
    """Whether ``raw`` (confluent-kafka's) says the member left for a late poll."""
    err = raw.error()
    return err is not None and err.code() == MAX_POLL_EXCEEDED
