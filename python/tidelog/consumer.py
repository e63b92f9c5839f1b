"""Consumers: members of a consumer group that split a topic's partitions and commit offsets.

See :meth:`tidelog.Store.consumer`. A consumer blocks for new messages on the topic's
doorbell (a futex every append rings, in any process), so waiting costs no CPU and wakes
within microseconds; before each sleep it spins on the doorbell for up to ``spin_us``
microseconds, so a message that comes meanwhile is seen without a wake-up.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Literal, cast

from tidelog import _core, _fork
from tidelog._checks import check_int, check_seconds, check_text, storage_errors
from tidelog._core import InvalidConfigError, Message, OffsetOutOfRangeError, RebalanceError
from tidelog._fork import Born
from tidelog.groups import Membership
from tidelog.offsets import Committed, OffsetStore

if TYPE_CHECKING:
    from tidelog._protocols import StoreView

__all__ = ["Consumer", "Delivery", "Start"]

#: How often a consumer held back by an open transaction checks whether its producer died.
_ORPHAN_CHECK_S = 1.0
#: Microseconds a waiting consumer spins on the doorbell before sleeping (the core's default).
_SPIN_US = cast("int", _core.WAIT_DEFAULTS["spin_us"])
#: Longest commit metadata: its length is stored as an unsigned 16-bit number.
_MAX_METADATA_BYTES = 0xFFFF
#: One past the largest max_messages a poll accepts.
_MAX = 2**63

Delivery = Literal["at-most-once", "at-least-once", "exactly-once"]
Start = Literal["earliest", "latest"]
PartitionCallback = Callable[[list[int]], None]


def _check_offset(partition: object, offset: object) -> None:
    """Raises the error for one bad ``commit`` entry (the caller saw something off)."""
    if isinstance(partition, bool) or not isinstance(partition, int):
        raise TypeError(f"offsets: partition must be int, got {type(partition).__name__}")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"offsets: offset must be int, got {type(offset).__name__}")
    if offset < 0:
        raise InvalidConfigError(f"offsets must be ints >= 0, got {{{partition}: {offset}}}")


@dataclass(frozen=True, slots=True)
class _Placement:
    """Where a consumer starts the partitions it is given, and whom it tells.

    Read only when the assignment changes. Kept apart so that a consumer holds at most 29
    attributes: CPython 3.11 keeps more in a dictionary of the instance's own, and then no
    longer specializes the method calls on it that every ``poll`` makes.
    """

    #: Where a partition the group has no commit for starts.
    start: Start
    #: Where one whose commit is stale starts (``auto_offset_reset``; None: raise).
    reset: Start | None
    on_assign: PartitionCallback | None
    on_revoke: PartitionCallback | None


class _Partition:
    """What a consumer keeps about one partition assigned to it."""

    __slots__ = (
        "fetched_from",
        "origin",
        "out_of_range",
        "partition",
        "paused",
        "placed_from",
        "position",
        "tail_next",
        "tail_offset",
        "unresolved",
    )

    def __init__(self, partition: int, position: int, unresolved: bool) -> None:
        self.partition = partition
        # The next offset to fetch.
        self.position = position
        # Where the partition started when assigned (an aborted transaction rewinds there
        # if the group has committed nothing yet).
        self.origin = position
        # Where the last fetch that returned messages started (an at-most-once poll that
        # cannot hand them out rewinds there).
        self.fetched_from = position
        # The offset of the last message fetched and the position after it.
        self.tail_offset = -1
        self.tail_next = 0
        self.paused = False
        # The group's commit it was placed from (None: none, or a stale one). At-most-once:
        # a stale member's give-back may move the commit back until this member claims it
        # (``Consumer._claim``), which looks whether it is still this one.
        self.placed_from: Committed | None = None
        # Exactly-once: where to resume hangs on a transaction of this group still open.
        self.unresolved = unresolved
        # The committed offset points into messages that recovery removed: poll raises
        # OffsetOutOfRangeError (this message) until seek() moves it.
        self.out_of_range: str | None = None


class Consumer:
    """A member of a consumer group on one topic. Create it with :meth:`Store.consumer`.

    Iterate it (``for msg in consumer``) to block for messages, or call :meth:`poll`.
    """

    @storage_errors
    def __init__(
        self,
        store: StoreView,
        offsets: OffsetStore,
        topic: str,
        group: str,
        *,
        delivery: Delivery = "at-least-once",
        start: Start = "earliest",
        max_poll_messages: int = 500,
        lease_seconds: float = 3.0,
        on_assign: PartitionCallback | None = None,
        on_revoke: PartitionCallback | None = None,
        auto_offset_reset: Start | None = None,
        spin_us: int = _SPIN_US,
    ) -> None:
        """Joins ``group`` on ``topic``; see :meth:`tidelog.Store.consumer`."""
        if delivery not in ("at-most-once", "at-least-once", "exactly-once"):
            raise InvalidConfigError(
                "delivery must be 'at-most-once', 'at-least-once' or 'exactly-once', "
                f"got {delivery!r}"
            )
        if start not in ("earliest", "latest"):
            raise InvalidConfigError(f"start must be 'earliest' or 'latest', got {start!r}")
        if auto_offset_reset not in (None, "earliest", "latest"):
            raise InvalidConfigError(
                f"auto_offset_reset must be None, 'earliest' or 'latest', got {auto_offset_reset!r}"
            )
        check_text(group, "group", empty=False)
        if isinstance(max_poll_messages, bool) or not isinstance(max_poll_messages, int):
            raise TypeError(
                f"max_poll_messages must be int, got {type(max_poll_messages).__name__}"
            )
        if max_poll_messages < 1:
            raise InvalidConfigError(f"max_poll_messages must be >= 1, got {max_poll_messages}")
        check_seconds(lease_seconds, "lease_seconds")
        self.spin_us = check_int(spin_us, "spin_us", 0, _core.MAX_SPIN_US)
        # Commits name the topic's incarnation (``_topic.incarnation``): never applied to a
        # topic created again.
        self._topic = store.topic(topic)
        self._native = store.native
        self._born = Born()
        self._orphans_checked = 0.0
        self._offsets = offsets
        self.topic, self.group = topic, group
        self.delivery: Delivery = delivery
        self._placement = _Placement(start, auto_offset_reset, on_assign, on_revoke)
        self.max_poll_messages = max_poll_messages
        # The assigned partitions, by number, in order.
        self._parts: dict[int, _Partition] = {}
        # The one partition when exactly one is assigned (the fetch's fast path), else None.
        self._only: _Partition | None = None
        # Some partition waits for a transaction of this group (``_Partition.unresolved``).
        self._unresolved = False
        # The offsets to commit, per partition. At-least-once: after what was delivered;
        # the next poll (or commit, or close) commits them.
        self._delivered: dict[int, int] = {}
        # Exactly-once: the position after the last message handed to the application,
        # per partition, which the next transaction commits. Kept when a partition is
        # revoked: that transaction must fail its ownership check.
        self._consumed: dict[int, int] = {}
        # The new positions of the partitions the last fetch read from.
        self._fetched: dict[int, int] = {}
        # Exactly-once: a transaction with this consumer is open.
        self._in_transaction = False
        # Exactly-once: partitions revoked while ``_consumed`` held input from them. The
        # open transaction must abort even if they came back: their new owner may have
        # processed the same input meanwhile.
        self._revoked_inputs: set[int] = set()
        self._buffer: deque[Message] = deque()
        # Fetched messages of paused partitions, taken out of ``_buffer`` by pause() and put
        # back by resume(): not handed out, so commits stop at them (``_handed_out``).
        self._held_by_pause: dict[int, list[Message]] = {}
        # At-most-once: partitions placed at the group's commits and not claimed yet (see
        # ``_claim``); the next fetch that reads one claims it first.
        self._unclaimed: set[int] = set()
        # At-most-once: unclaimed partitions this member committed itself (``commit``); its
        # claim starts there, wherever that is.
        self._committed_unclaimed: set[int] = set()
        self._next_partition = 0
        self._closed = False
        self._membership = Membership(
            store.path,
            topic,
            group,
            self._topic.partitions,
            lease_seconds,
            core=store.native,
            committed_generation=partial(
                offsets.highest_generation, group, topic, self._topic.incarnation
            ),
        )
        # Bound to the membership: a commit of a generation older than the group's is
        # refused where commits are ordered (RebalanceError, or False from the hot path's
        # commit_owned), so a member that lost its partitions in a rebalance it has not
        # seen never moves the new owner's commit back.
        committer = offsets.committer(
            group, self._topic, self._topic.incarnation, self._membership.native
        )
        self._commit_record = committer.commit
        self._commit_owned = committer.commit_owned
        self._membership.join()
        self._adopt([])

    # -- group membership ---------------------------------------------------------------

    def _adopt(self, previous: list[int], lost: bool = False) -> None:
        """Takes the membership's current assignment, initialising new positions.

        ``lost``: every partition of ``previous`` may have been another member's meanwhile;
        all are revoked, and those still assigned are assigned again.
        """
        now = self._membership.assignment
        revoked = list(previous) if lost else [p for p in previous if p not in now]
        added = list(now) if lost else [p for p in now if p not in previous]
        for p in revoked:
            self._parts.pop(p, None)
            self._delivered.pop(p, None)
            self._unclaimed.discard(p)
            self._committed_unclaimed.discard(p)
            # Not handed out, so not committed past, except by at-most-once: its pause gave
            # them back, or could not because the new owner had already claimed the
            # partition; a commit back now would be passed over (see ``_give_back``).
            self._held_by_pause.pop(p, None)
            # ``_consumed`` keeps it: a transaction holding outputs made from a partition
            # this member lost must fail its ownership check and abort.
            if p in self._consumed:
                self._revoked_inputs.add(p)
        if revoked:
            self._set_only()
            self._unresolved = any(part.unresolved for part in self._parts.values())
            # Empty in practice: a member looks at its group only once it handed out all
            # it fetched, so no at-most-once message committed at fetch is dropped here.
            _keep_only(self._buffer, lambda m: m.partition not in revoked)
            if self._placement.on_revoke:
                self._placement.on_revoke(revoked)
        self._place(added)
        self._resolve()
        if added and self._placement.on_assign:
            self._placement.on_assign(added)

    def _place(self, partitions: list[int], committed: dict[int, Committed] | None = None) -> None:
        """Positions ``partitions`` at the group's commits (or the start policy).

        A partition not assigned before is added. ``committed``: the group's commits, if
        just read.
        """
        # Not the fast path while partitions are being added (should this raise midway).
        self._only = None
        if committed is None:
            committed = (
                self._offsets.committed(self.group, self.topic, self._topic.incarnation)
                if partitions
                else {}
            )
        parts = self._parts
        added = False
        for p in partitions:
            start, end = self._topic.start_offset(p), self._topic.end_offset(p)
            stale = self._stale(p, committed[p], end) if p in committed else None
            placed_from = committed.get(p) if stale is None else None
            if stale is not None:
                if self._placement.reset is None:
                    position = min(max(committed[p].offset, start), end)
                else:
                    stale = None
                    position = start if self._placement.reset == "earliest" else end
            elif p in committed:
                position = min(max(committed[p].offset, start), end)
            elif self._placement.start == "earliest":
                position = start
            else:
                # Kafka's read_committed "latest": a transaction open now is delivered
                # once it commits.
                position = self._topic.last_stable_offset(p)
            part = parts.get(p)
            if part is None:
                # Exactly-once: where to resume may still hang on a transaction of this
                # group (a crashed instance's commit that its producer's next instance
                # finishes): fetch nothing from a new partition until it is settled.
                unresolved = self.delivery == "exactly-once"
                part = parts[p] = _Partition(p, position, unresolved)
                self._unresolved |= unresolved
                added = True
            part.position = part.origin = position
            part.placed_from = placed_from
            # A placement replaces the last one's verdict (placed again at a fresh commit).
            part.out_of_range = stale
        if self.delivery == "at-most-once":
            self._unclaimed.update(partitions)
            self._committed_unclaimed.difference_update(partitions)
        if added:
            # Fetching goes round the partitions in order.
            self._parts = dict(sorted(parts.items()))
        self._set_only()

    def _set_only(self) -> None:
        """Keeps ``_only`` in step with ``_parts`` (called wherever partitions come or go)."""
        self._only = next(iter(self._parts.values())) if len(self._parts) == 1 else None

    def _stale(self, partition: int, committed: Committed, end: int) -> str | None:
        """Why ``committed`` no longer points where the group left off, or None.

        A commit above the end of the log, or older than a recovery that removed offsets
        below it (those offsets were, or will be, handed out again to other messages), is
        stale: resuming from it would silently skip or re-read the wrong messages.
        """
        where = f"group {self.group!r} on {self.topic!r} partition {partition}"
        advice = "seek() or use auto_offset_reset='earliest'|'latest'"
        if committed.offset > end:
            return (
                f"committed offset {committed.offset} of {where} is past the end of the log "
                f"({end}): messages were removed by recovery; {advice}"
            )
        directory = _core.partition_dir(self._native.path, self.topic, partition)
        try:
            events = _core.recovery_events(directory)
        except FileNotFoundError:
            return None
        for e in events:
            if e["first_offset"] < committed.offset and committed.timestamp_ms <= e["time_ms"]:
                return (
                    f"committed offset {committed.offset} of {where} points into offsets "
                    f"{e['first_offset']}..{e['end_offset']} that recovery removed "
                    f"({e['kind']}); offsets from {e['first_offset']} now belong to other "
                    f"messages; {advice}"
                )
        return None

    def _held_back(self, partition: int | None = None, at: int = 0) -> None:
        """Reading may be stopped at a transaction still open: finish it if its producer died.

        ``partition`` read nothing at ``at``; it is held back if the log goes on past that
        (for ``None``, the caller knows). Only finishes transactions no live instance of the
        producer's name holds; looks at most once a second, so an idle poll stays cheap.
        """
        now = time.monotonic()
        if now - self._orphans_checked < _ORPHAN_CHECK_S:
            return
        self._orphans_checked = now
        if partition is None or at < self._topic.end_offset(partition):
            self._native.abort_orphaned_transactions()

    def _resolve(self) -> None:
        """Places the partitions waiting for a transaction of this group once it ended."""
        if not self._unresolved:
            return
        if self._offsets.has_pending(self.group, self.topic):
            self._held_back()
            return
        waiting = [p for p, part in self._parts.items() if part.unresolved]
        for p in waiting:
            self._parts[p].unresolved = False
        self._unresolved = False
        self._place(waiting)

    @storage_errors
    def _sync(self) -> None:
        membership = self._membership
        previous = list(membership.assignment)
        if membership.heartbeat():
            # Generations this member did not see may have given its partitions to another
            # member, who may have handed out and committed past our positions: resume
            # from the group's commits, as after a revocation.
            self._adopt(previous, lost=membership.skipped)

    def _owns_current(self, partitions: dict[int, int]) -> bool:
        return (
            self._membership.current_generation() == self._membership.generation
            and partitions.keys() <= self._parts.keys()
        )

    def _claim(self, partitions: list[int]) -> None:
        """At-most-once: claims ``partitions``, placed and not claimed yet, before reading them.

        Only a partition about to be read is claimed (not a paused one, nor one a fetch
        filled up before reaching): until this member reads from it, a stale member's
        give-back still counts. Reads again where they start (the group's commits) and
        commits that again in this member's generation. A partition whose commit this
        member made meanwhile starts there, as a Kafka consumer reads a newly assigned
        partition's committed offset at its first poll; so does one whose commit moved back
        since it was placed (a stale member's give-back, below). A commit that moved forward
        is a stale member's fetch that the committer admitted before the rebalance and that
        was written only after the placement: that member hands none of it out (its look
        once the commit is written sees the rebalance), so this member starts where it was
        placed, and its claim there leaves the stale member's give-back nothing to move.

        The partitions may have moved from a member that has not seen the rebalance yet and
        holds fetched messages it committed past: when it stops (close, pause, seek) it gives
        them back (see ``_give_back``) if, and only if, nobody claimed the partition since.
        That give-back and this claim both hold the group's lock, so one comes first: a
        give-back before the claim is seen here (the partition is placed again, at it); one
        after it finds the claim, a commit of a newer generation, which every reader prefers
        to its own (the offsets table's fence), so it changes nothing. Either way nothing is
        handed out twice, and what a member gives back before the new owner first reads the
        partition is handed out. (A give-back of the current generation takes the lock too: the
        committer admits it only before the group moves on, but readers see it only once it
        is written, which could come after a claim's read.)

        This is the alternative to a revoke step (Kafka's eager or cooperative rebalance: the
        new owner waits until the previous one gave the partition up). A member that does
        not poll would hold every rebalance up for as long as its lease; here nobody waits,
        and what a member holds when it stops after the new owner read the partition is
        lost.
        """
        membership = self._membership
        parts = self._parts
        with membership.locked():
            if membership.read_generation() != membership.generation:
                return  # the commits of this fetch are refused; the next sync places again
            committed = self._offsets.committed(self.group, self.topic, self._topic.incarnation)
            unclaimed = [p for p in partitions if p in self._unclaimed and p in parts]
            own = self._committed_unclaimed
            moved = [
                p
                for p in unclaimed
                if (c := committed.get(p)) != parts[p].placed_from
                and (p in own or (c is not None and c.offset < parts[p].position))
            ]
            if moved:
                self._place(moved, committed)
            # The commit placed from, as it is (metadata too), in this generation. A stale
            # commit (placed_from None) is not made fresh: its timestamp says it is stale.
            claims: dict[str, dict[int, int]] = {}
            for p in unclaimed:
                placed_from = parts[p].placed_from
                if placed_from is not None:
                    claims.setdefault(placed_from.metadata, {})[p] = placed_from.offset
            for metadata, offsets in claims.items():
                self._commit_record(offsets, metadata, membership.generation)
            self._unclaimed.difference_update(unclaimed)
            own.difference_update(unclaimed)

    # -- fetching -------------------------------------------------------------------------

    def _fetch(self, limit: int) -> list[Message]:
        """Reads up to ``limit`` messages round-robin over the unpaused partitions.

        ``self._fetched`` receives the new positions of the partitions read.
        """
        if self._unresolved:
            self._resolve()
        if self._unclaimed:
            only = self._only
            if only is not None and not only.paused:
                self._claim([only.partition])
        # The common case, a member owning one partition: the steps of the general path
        # without the round over the partitions.
        part = self._fast_partition()
        if part is None:
            return self._fetch_general(limit)
        position = part.position
        try:
            out, after = self._topic.read_messages(part.partition, position, limit)
        except OffsetOutOfRangeError:
            # Recovery or retention moved the log: the general path reads again and copes.
            return self._fetch_general(limit)
        return self._took(part, position, out, after)

    def _fast_partition(self) -> _Partition | None:
        """The one partition to fetch from when the fast path applies, else None."""
        part = self._only
        if part is None or part.paused or part.unresolved or part.out_of_range is not None:
            return None
        return part

    def _took(
        self, part: _Partition, position: int, out: list[Message], after: int
    ) -> list[Message]:
        """The fast path's bookkeeping of a read of ``part`` at ``position``; returns ``out``."""
        self._next_partition += 1
        if out:
            part.fetched_from = position
            part.position = after
            part.tail_offset, part.tail_next = out[-1].offset, after
            self._fetched = {part.partition: after}
            return out
        self._fetched = {}
        if after > position:
            # Only transaction markers or aborted messages: step over them.
            part.position = after
        else:
            self._held_back(part.partition, after)
        return []

    def _fetch_general(self, limit: int) -> list[Message]:
        """:meth:`_fetch` over any number of partitions."""
        fetched: dict[int, int] = {}
        self._fetched = fetched
        out: list[Message] = []
        ready: list[_Partition] = []
        unclaimed = self._unclaimed
        for part in self._parts.values():
            if part.paused or part.unresolved:
                continue
            if part.out_of_range is not None:
                if part.partition in unclaimed:
                    self._claim([part.partition])  # a commit since may place it afresh
                if part.out_of_range is not None:
                    raise OffsetOutOfRangeError(part.out_of_range)
            ready.append(part)
        count = len(ready)
        try:
            for i in range(count):
                part = ready[(self._next_partition + i) % count]
                if unclaimed and part.partition in unclaimed:
                    self._claim([part.partition])  # may place it again
                    if part.out_of_range is not None:
                        raise OffsetOutOfRangeError(part.out_of_range)
                p, position = part.partition, part.position
                try:
                    messages, after = self._topic.read_messages(p, position, limit - len(out))
                except OffsetOutOfRangeError:
                    end = self._topic.end_offset(p)
                    if position > end:
                        # Recovery removed messages below our position while we were reading.
                        if self._placement.reset is None:
                            part.out_of_range = (
                                f"position {position} of group {self.group!r} on "
                                f"{self.topic!r} partition {p} is past the end of the log ({end}): "
                                "messages were removed by recovery; seek() or use "
                                "auto_offset_reset='earliest'|'latest'"
                            )
                            raise OffsetOutOfRangeError(part.out_of_range) from None
                        start = self._topic.start_offset(p)
                        part.position = start if self._placement.reset == "earliest" else end
                        continue
                    # Retention removed what we were about to read: continue from the start.
                    part.position = self._topic.start_offset(p)
                    continue
                if messages:
                    out += messages
                    part.fetched_from = position
                    part.position = fetched[p] = after
                    # Handing out the last message of this fetch moves past what the read
                    # skipped after it too (transaction markers), so lag can reach zero.
                    part.tail_offset, part.tail_next = out[-1].offset, after
                elif after > position:
                    # Only transaction markers or aborted messages: step over them.
                    part.position = after
                else:
                    self._held_back(p, after)
                if len(out) >= limit:
                    break
        except BaseException:
            # Nothing this round read is handed out: the partitions it moved go back, or
            # an error reading one partition would skip what was read from the others.
            for p in fetched:
                part = self._parts[p]
                part.position = part.fetched_from
            fetched.clear()
            raise
        self._next_partition += 1
        return out

    def poll(self, max_messages: int | None = None, timeout: float = 1.0) -> list[Message]:
        """Returns up to ``max_messages`` messages from this member's partitions.

        Waits up to ``timeout`` seconds for messages to arrive (from any process), returning
        ``[]`` if none did. With ``at-least-once`` delivery, calling ``poll`` again commits
        what the previous call returned; with ``at-most-once`` the offsets are committed
        before the messages are returned; with ``exactly-once`` they are committed by the
        next :meth:`Store.transaction` with this consumer.

        Args:
            max_messages: Most messages to return, at least 1 (as Kafka clients require);
                by default (and at most) the consumer's ``max_poll_messages``.
            timeout: Longest wait in seconds (``float("inf")``: until a message comes).

        Raises:
            InvalidConfigError: ``max_messages`` below 1, or a negative or NaN ``timeout``.
            TypeError: An argument of the wrong type (the message names it).
        """
        if self._born.generation != _fork.generation:
            self._born.check()
        # Exact types first: poll sits in tight loops; the full checks run only on a miss.
        if max_messages is not None and not (type(max_messages) is int and 0 < max_messages < _MAX):
            check_int(max_messages, "max_messages", 1, _MAX - 1)
        if not ((type(timeout) is float or type(timeout) is int) and timeout >= 0):
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(
                    f"timeout must be a number of seconds, got {type(timeout).__name__}"
                )
            if not timeout >= 0:
                raise InvalidConfigError(f"timeout must be >= 0 seconds, got {timeout}")
        if self._consumed:
            self._require_step_committed()
        messages = self._poll(max_messages, timeout)
        if self.delivery == "exactly-once":
            for m in messages:
                self._consume(m)
        return messages

    def _consume(self, message: Message) -> None:
        """Exactly-once: ``message`` was handed out; the next transaction commits past it."""
        p = message.partition
        part = self._parts.get(p)
        if part is not None and message.offset == part.tail_offset:
            self._consumed[p] = part.tail_next
        else:
            self._consumed[p] = message.offset + 1

    def _poll(self, max_messages: int | None, timeout: float) -> list[Message]:
        if self._closed or self._born.generation != _fork.generation:
            self._check_open()
        if self._buffer:
            return self._take_buffered(max_messages or self.max_poll_messages)
        # Comparisons, not min() and max(): on CPython 3.11 each of those builds a tuple of
        # its arguments, parses keywords and iterates (~75 ns a call here, against ~12 ns).
        cap = self.max_poll_messages
        limit = max_messages if max_messages and max_messages < cap else cap
        if self._delivered:
            self._commit_delivered()
        # What ``_sync`` would find first, checked here: with the generation unchanged and
        # no heartbeat due (nearly every poll) it has nothing to do.
        membership = self._membership
        now = time.monotonic()
        if now >= membership.heartbeat_due or membership.read_generation() != membership.generation:
            self._sync()
        deadline = now + timeout if timeout > 0 else now
        topic = self._topic
        ticket = topic.ticket()
        messages = self._fetch(limit)
        while not messages:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return []
            # The wait ends by the time the heartbeat is due, so one that rang returned
            # before then: after it only the generation needs a look (one memory read), and
            # the way from the wake-up to the messages reads no clock.
            if now < membership.heartbeat_due:
                due_in = membership.heartbeat_due - now
                wait = remaining if remaining < due_in else due_in
                part = None if self._unresolved else self._fast_partition()
                if part is not None:
                    # One partition: the wait and the read are one native call (one release
                    # of the GIL). What it read after a rebalance is dropped unread: the
                    # position has not moved, and the fetch below starts over.
                    position = part.position
                    try:
                        woken = topic.wait_messages(
                            ticket, part.partition, position, limit, wait, self.spin_us
                        )
                    except OffsetOutOfRangeError:
                        woken = None  # the fetch below copes
                    if woken is not None and membership.read_generation() == membership.generation:
                        out, after, ticket = woken
                        messages = self._took(part, position, out, after)
                        continue
                elif (
                    topic.wait(ticket, wait, self.spin_us)
                    and membership.read_generation() == membership.generation
                ):
                    ticket = topic.ticket()
                    messages = self._fetch(limit)
                    continue
            # The heartbeat is due, the wait timed out or the group rebalanced: heartbeat,
            # then fetch again (the assignment may have moved).
            self._sync()
            ticket = topic.ticket()
            messages = self._fetch(limit)
        if self.delivery == "at-most-once":
            return self._hand_out(messages)
        # The rest of ``_hand_out``, inline: the next poll (or commit) commits these.
        self._delivered.update(self._fetched)
        return messages

    def _take_buffered(self, limit: int) -> list[Message]:
        out = [self._buffer.popleft() for _ in range(min(limit, len(self._buffer)))]
        return out

    def _hand_out(self, messages: list[Message]) -> list[Message]:
        moved = self._fetched
        if self.delivery == "at-most-once":
            owned = self._owns_current(moved)
            if owned:
                try:
                    self._commit_now(moved)
                except RebalanceError:
                    owned = False  # the group moved on before the commit was written
                except BaseException:
                    # Not committed past, so not handed out; and not skipped either: the
                    # next poll reads them again (and commits again).
                    self._rewind(moved)
                    raise
                else:
                    # Looked at again once the commit is written: a member that joined
                    # after the check may have read the group's commits without it, and
                    # hands these out itself.
                    membership = self._membership
                    owned = membership.read_generation() == membership.generation
                    if not owned:
                        # Or with it: then they go back, as a stale member's would.
                        # A loop, not a comprehension: one would make a cell of its
                        # variables in every hand-out (Python 3.11).
                        fetched: dict[int, int] = {}
                        for p in moved:
                            if (part := self._parts.get(p)) is not None:
                                fetched[p] = part.fetched_from
                        try:
                            self._give_back(fetched)
                        except BaseException:
                            self._rewind(moved)
                            raise
            if not owned:
                # A rebalance landed between fetching and handing out: hand out nothing and
                # rewind, so the new owner (or we, on the next poll) delivers these.
                self._rewind(moved)
                self._sync()
                return []
        else:
            self._delivered.update(moved)
        return messages

    def _rewind(self, moved: dict[int, int]) -> None:
        """Moves the partitions of ``moved`` back to where the last fetch read them from."""
        for p in moved:
            part = self._parts.get(p)
            if part is not None:
                part.position = part.fetched_from

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        # The checks of ``_born.check`` and ``_require_step_committed``, inline: they cost
        # a call each per message, more than the rest of a buffered step.
        if self._born.generation != _fork.generation:
            self._born.check()
        if self._consumed:
            self._require_step_committed()
        while not self._buffer:
            self._check_open()
            self._buffer.extend(
                self._poll(self.max_poll_messages, self._membership.heartbeat_interval())
            )
        message = self._buffer.popleft()
        if self.delivery == "exactly-once":
            self._consume(message)
        return message

    def next_nowait(self) -> Message | None:
        """The next message, as iterating returns it, or None if none is there now.

        Never waits: one fetch at most (with the same commits and group heartbeat as an
        iteration step). For event loops, which wait elsewhere (see :mod:`tidelog.aio`).
        """
        if self._born.generation != _fork.generation:
            self._born.check()
        if self._consumed:
            self._require_step_committed()
        if not self._buffer:
            self._check_open()
            self._buffer.extend(self._poll(self.max_poll_messages, 0.0))
            if not self._buffer:
                return None
        message = self._buffer.popleft()
        if self.delivery == "exactly-once":
            self._consume(message)
        return message

    @property
    def ready_messages(self) -> deque[Message] | None:
        """The fetched messages iterating hands out next, in order; None for exactly-once.

        For event loops (see :mod:`tidelog.aio`): while it is not empty, a step may take
        its leftmost message itself, which is what :meth:`next_nowait` would return, at a
        fraction of the cost of the call. :meth:`next_nowait` refills it. It is the same
        deque for the consumer's life. Exactly-once consumers give None: each message they
        hand out must be recorded for the transaction that commits it.
        """
        return None if self.delivery == "exactly-once" else self._buffer

    @property
    def heartbeat_seconds(self) -> float:
        """Longest a waiting member may go without looking at its group (its heartbeat)."""
        return self._membership.heartbeat_interval()

    # -- offsets --------------------------------------------------------------------------

    def _commit_now(self, offsets: dict[int, int], metadata: str = "") -> None:
        # A commit names the topic's incarnation, so one that races a deletion is harmless;
        # still, as every call on a deleted topic, it raises TopicNotFoundError (the
        # committer reads the partitions' ends).
        self._commit_record(offsets, metadata, self._membership.generation)

    def _commit_delivered(self) -> None:
        """At-least-once: the application moved past what was delivered; commit it."""
        delivered = self._delivered
        if not delivered or self.delivery == "exactly-once":
            return
        # Every poll of an at-least-once member comes here (with nothing buffered):
        # ``_owns_current`` and ``_commit_now`` inline, and no copy when every partition is
        # still ours (the usual).
        offsets, held = (
            self._handed_out() if self._buffer or self._held_by_pause else (delivered, {})
        )
        parts = self._parts
        if offsets.keys() <= parts.keys():
            owned = offsets
        else:
            owned = {p: o for p, o in offsets.items() if p in parts}
        membership = self._membership
        if owned and membership.read_generation() == membership.generation:
            # The group moved on before the commit was written: as if not owned. (A try
            # costs nothing here; contextlib.suppress would cost an object every poll.)
            try:  # noqa: SIM105
                self._commit_record(owned, "", membership.generation)
            except RebalanceError:
                pass
        if held:  # what is still buffered is committed later
            for p in [p for p in delivered if p not in held]:
                del delivered[p]
        else:
            delivered.clear()

    def _give_back_unhanded(self) -> None:
        """At-most-once, closing: commits back to the first message not handed out.

        The fetch's commit moved past all it read, but iterating hands a fetch out one
        message at a time (and :meth:`pause` held back what it could not give back).
        """
        _, first = self._handed_out()  # nothing is delivered-and-uncommitted here
        self._give_back(first)

    def _give_back(self, offsets: dict[int, int]) -> bool:
        """At-most-once: moves the commit back to ``offsets``, fetched and not handed out.

        A commit of the same generation applies even when it moves back (as after a
        seek), so the member that takes the partition next starts there. Returns whether
        the commit was written for every partition of ``offsets`` this member owns.

        A member the group moved on from (a rebalance it has not seen yet, or generations
        it skipped) gives back too, but only what nobody claimed since (see ``_claim``): the
        new owner claims a partition before it first reads from it, under the group's
        lock, which a stale give-back takes too. So the new owner either starts at what is
        given back, or has claimed first and may have handed out from the fetch's commit
        already; then moving that commit back would have a later owner hand those out
        again, and what this member holds is lost instead, as at-most-once allows. Nothing
        a member hands out is ever given back, and every commit that moves back names the
        generation of the fetch it undoes, so a crash at any point loses messages at most,
        never repeats one.
        """
        owned = {p: o for p, o in offsets.items() if p in self._parts}
        if not owned:
            return False
        membership = self._membership
        generation = membership.generation
        parts = self._parts
        # No rebalance, so no claim, while the lock is held: also in this member's
        # generation, where the committer admits the commit before the group moves on but
        # readers see it only once written, which a member joining meanwhile could claim
        # before (its claim, of a newer generation, would fence the give-back).
        with membership.locked():
            if membership.read_generation() == generation:
                # The usual: no rebalance since this member looked.
                try:
                    self._commit_record(owned, "", generation)
                except RebalanceError:
                    pass  # the group moved on meanwhile: stale, as below
                else:
                    return True
            # The partition's commit is still the one this member's fetch wrote (its
            # position) unless someone committed since; a claim that wrote the same offset
            # again is of a newer generation, and readers pass this over.
            committed = self._offsets.committed(self.group, self.topic, self._topic.incarnation)
            ours = {
                p: o
                for p, o in owned.items()
                if (c := committed.get(p)) is not None and c.offset == parts[p].position
            }
            if ours:
                # Not checked against the group's generation: this member's is stale.
                unfenced = self._offsets.committer(self.group, self._topic, self._topic.incarnation)
                unfenced.commit(ours, "", generation)
        return len(ours) == len(owned)

    def _handed_out(self) -> tuple[dict[int, int], dict[int, int]]:
        """What at-least-once may commit, and where iterating still holds fetched messages.

        A fetch counts as delivered for ``poll``, which returns it whole, but iterating
        hands it out one message at a time: a commit stops at the first message of each
        partition still in the buffer, or held back by :meth:`pause`. Returns the offsets
        to commit (``_delivered`` itself when nothing is buffered) and, per partition,
        that first buffered offset.
        """
        delivered = self._delivered
        if not self._buffer and not self._held_by_pause:
            return delivered, {}
        held = {p: messages[0].offset for p, messages in self._held_by_pause.items()}
        for m in self._buffer:
            if m.partition not in held:
                held[m.partition] = m.offset
                if len(held) == len(self._parts):
                    break
        return {p: held.get(p, o) for p, o in delivered.items()}, held

    def commit(self, offsets: dict[int, int] | None = None, metadata: str = "") -> None:
        """Commits offsets durably (and atomically across partitions).

        Args:
            offsets: The next offset to read, per partition. By default, everything
                delivered so far.
            metadata: Optional text stored with the commit.

        Raises:
            RebalanceError: The group rebalanced since this member last polled (looked
                at again where the commit is appended, so a rebalance landing meanwhile
                counts), or a partition is not assigned to it. Nothing is committed.
            InvalidConfigError: An exactly-once consumer: its offsets are committed only
                by :meth:`Store.transaction`, atomically with the outputs; or a negative
                offset, or metadata that is not valid Unicode.
            OffsetOutOfRangeError: An offset past the partition's end offset (nothing is
                committed: lag is never negative).
            TypeError: ``offsets`` is not a dict of int to int, or ``metadata`` not a str.
        """
        # Checked by type identity first: commits sit in tight loops, and the exact checks
        # (bool is an int, int subclasses are accepted as partitions) run only on a miss.
        if metadata or type(metadata) is not str:
            check_text(metadata, "metadata")
            if len(metadata.encode()) > _MAX_METADATA_BYTES:
                raise InvalidConfigError(
                    f"metadata must be at most {_MAX_METADATA_BYTES} bytes of UTF-8, "
                    f"got {len(metadata.encode())}"
                )
        # The common commit (a dict of exact ints, only partitions this member owns, the
        # group unchanged) is checked and written by one native call, which writes nothing
        # and returns False for anything else: ``_commit_checked`` then explains it.
        held: Container[int] = ()
        membership = self._membership
        generation = membership.generation
        if not (
            offsets is not None
            and not self._closed
            and self.delivery != "exactly-once"
            and membership.read_generation() == generation
            and self._commit_owned(offsets, metadata, generation, self._parts)
        ):
            offsets, held = self._commit_checked(offsets, metadata)
        unclaimed = self._unclaimed
        if unclaimed:  # where at-most-once's claim starts (see _claim)
            # No generator over ``offsets``: a closure would make it a cell in every call.
            self._committed_unclaimed.update(unclaimed.intersection(offsets))
        delivered = self._delivered
        if delivered:
            for p in offsets:
                if p not in held:  # else what is still buffered is committed later
                    delivered.pop(p, None)

    def _commit_checked(
        self, offsets: dict[int, int] | None, metadata: str
    ) -> tuple[dict[int, int], Container[int]]:
        """:meth:`commit` with every check.

        Returns the offsets committed, and where iterating still holds fetched messages
        (see :meth:`_handed_out`).
        """
        # The loop over the offsets given also notes whether this member owns them all.
        parts = self._parts
        owned = True
        if offsets is not None:
            if type(offsets) is not dict and not isinstance(offsets, dict):
                raise TypeError(f"offsets must be a dict[int, int], got {type(offsets).__name__}")
            for p, o in offsets.items():
                if type(p) is not int or type(o) is not int or o < 0:
                    _check_offset(p, o)
                if p not in parts:
                    owned = False
        if self._closed:
            self._check_open()
        # The fork check is the native end_offset's below, made before anything is written.
        if self.delivery == "exactly-once":
            raise InvalidConfigError(
                "an exactly-once consumer commits through store.transaction(producer, consumer)"
            )
        held: Container[int] = ()
        if offsets is None:
            handed_out, held = self._handed_out()
            offsets = dict(handed_out)
            owned = offsets.keys() <= parts.keys()
        if not offsets:
            self._check_open()  # no native call below to make the fork check
        membership = self._membership
        if not (owned and membership.read_generation() == membership.generation):
            raise RebalanceError(
                f"group {self.group!r} rebalanced (generation {membership.generation} is "
                f"stale) or partitions {sorted(set(offsets) - set(parts))} are not "
                "assigned to this member; poll() to get the new assignment"
            )
        # Raises OffsetOutOfRangeError for an offset past its partition's end (lag is never
        # negative) and TopicNotFoundError for a deleted topic, before writing anything.
        self._commit_record(offsets, metadata, membership.generation)
        return offsets, held

    def committed(self) -> dict[int, int]:
        """The group's committed offsets for this topic, per partition.

        Raises:
            StoreClosedError: The consumer is closed (as Kafka's clients refuse it).
        """
        self._check_open()
        committed = self._offsets.committed(self.group, self.topic, self._topic.incarnation)
        return {p: c.offset for p, c in committed.items()}

    def lag(self) -> dict[int, int]:
        """Messages behind the end of each assigned partition.

        Counted from the committed offset, or from the start position when nothing is
        committed yet.

        Raises:
            StoreClosedError: The consumer is closed (as Kafka's clients refuse it).
        """
        self._check_open()
        committed = self.committed()
        return {
            p: self._topic.end_offset(p) - committed.get(p, self._initial(p))
            for p in sorted(self._parts)
        }

    def _initial(self, p: int) -> int:
        if self._placement.start == "earliest":
            return self._topic.start_offset(p)
        return self._parts[p].position

    # -- transactions (see tidelog.transaction) -------------------------------------------

    def _require_step_committed(self) -> None:
        """Exactly-once: each step (what was handed out) ends with a transaction."""
        if self._closed:
            self._check_open()  # a closed consumer says so first
        if self._consumed and not self._in_transaction and self.delivery == "exactly-once":
            raise InvalidConfigError(
                "an exactly-once consumer needs a transaction per step: the messages handed "
                f"out up to offsets {self._consumed} were not committed; process them inside "
                "`with store.transaction(producer, consumer)` before taking more"
            )

    # The methods below are the consumer's side of tidelog._protocols.TransactionMember:
    # a transaction calls them; an application does not.

    def transaction_begin(self) -> None:
        """Joins a transaction that is beginning (called by :class:`Transaction`).

        Raises:
            InvalidConfigError: This consumer is already in an open transaction.
        """
        self._check_open()
        if self._in_transaction:
            raise InvalidConfigError("this consumer is already in an open transaction")
        self._in_transaction = True

    def transaction_send_offsets(self, producer: _core.Producer) -> dict[int, int]:
        """Sends the position after each message handed out into ``producer``'s transaction.

        Called by :class:`Transaction` when it commits; nothing is sent when no message
        was handed out.

        Returns:
            The offsets sent, per partition.

        Raises:
            RebalanceError: The group rebalanced, or a partition read from was reassigned,
                while the transaction ran.
        """
        offsets = dict(self._consumed)
        if not offsets:
            return offsets
        if self._revoked_inputs or not self._owns_current(offsets):
            raise RebalanceError(
                f"group {self.group!r} rebalanced or partitions "
                f"{sorted(self._revoked_inputs | (set(offsets) - set(self._parts)))} were "
                "reassigned while the transaction ran; it is aborted and the new owner "
                "processes those messages"
            )
        self._offsets.send_commit(
            producer,
            self.group,
            self.topic,
            self._topic.incarnation,
            offsets,
            self._membership.generation,
        )
        # Looked at again once the commit is written, pending (a new owner waits for it;
        # the commit would write it anyway): a member that joined after the check may have
        # read the group's commits without it, and processes the same input.
        producer.flush()
        if self._membership.read_generation() != self._membership.generation:
            raise RebalanceError(
                f"group {self.group!r} rebalanced while the transaction committed; it is "
                "aborted and the new owner processes those messages"
            )
        return offsets

    def transaction_committed(self, offsets: dict[int, int]) -> None:
        """The transaction that sent ``offsets`` committed (called by :class:`Transaction`)."""
        self._in_transaction = False
        self._revoked_inputs.clear()
        for p, o in offsets.items():
            if self._consumed.get(p) == o:
                del self._consumed[p]

    def transaction_aborted(self) -> None:
        """Rewinds to the committed offsets, so what the transaction read comes again.

        Called by :class:`Transaction` when it aborts.
        """
        committed = self._offsets.committed(self.group, self.topic, self._topic.incarnation)
        for p, part in self._parts.items():
            start = self._topic.start_offset(p)
            origin = committed[p].offset if p in committed else part.origin
            part.position = max(origin, start)
        self._in_transaction = False
        self._buffer.clear()
        self._held_by_pause.clear()
        self._consumed.clear()
        self._revoked_inputs.clear()
        self._delivered.clear()

    # -- positions --------------------------------------------------------------------------

    def assignment(self) -> list[int]:
        """Partitions this member owns.

        Raises:
            StoreClosedError: The consumer is closed (as Kafka's Java client refuses it).
        """
        self._check_open()
        return sorted(self._parts)

    def position(self, partition: int) -> int:
        """The offset of the next message this member hands out from ``partition``.

        As Kafka's ``position``: messages fetched and not handed out yet (the rest of a
        fetch that iterating hands out one at a time, or what :meth:`pause` holds back)
        come first, so it is the first of them, not where the last fetch ended.
        """
        self._require_assigned(partition)
        held = self._held_by_pause.get(partition)
        if held:
            return held[0].offset
        for m in self._buffer:
            if m.partition == partition:
                return m.offset
        return self._parts[partition].position

    def seek(self, partition: int, offset: int) -> None:
        """Makes ``poll`` continue at ``offset`` of ``partition``."""
        self._require_assigned(partition)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"offset must be int, got {type(offset).__name__}")
        start, end = self._topic.start_offset(partition), self._topic.end_offset(partition)
        if not start <= offset <= end:
            raise OffsetOutOfRangeError(
                f"offset {offset} out of range for {self.topic!r} partition {partition}: "
                f"the log starts at offset {start} and the next offset is {end}"
            )
        if self.delivery == "at-most-once":
            # The seek drops what was fetched and not handed out, which the fetch committed
            # past: the commit goes back to its first message, where handing out left it,
            # so closing leaves it to the group. The seek commits nothing of its own (as in
            # Kafka); the next fetch commits from the new position, back or forward.
            first = self._handed_out()[1].get(partition)
            if first is not None:
                self._give_back({partition: first})
        part = self._parts[partition]
        part.position = offset
        part.out_of_range = None
        # The position is the application's now, not the group's commit: nothing to claim
        # (and a claim would commit the seek, which commits nothing of its own).
        self._unclaimed.discard(partition)
        self._committed_unclaimed.discard(partition)
        # What was delivered before the seek must not be committed past the new position.
        self._delivered.pop(partition, None)
        self._held_by_pause.pop(partition, None)
        _keep_only(self._buffer, lambda m: m.partition != partition)

    def seek_to_timestamp(self, timestamp_ms: int) -> None:
        """Moves every assigned partition to its first message at or after ``timestamp_ms``."""
        self._born.check()
        for p in self.assignment():
            offset = self._topic.offset_for_timestamp(p, timestamp_ms)
            self.seek(p, self._topic.end_offset(p) if offset is None else offset)

    def pause(self, partition: int) -> None:
        """Stops handing out messages of ``partition`` (it stays assigned) until :meth:`resume`.

        Nothing more is fetched from it, and what was fetched and not handed out yet is
        held back, not dropped: iterating and :meth:`poll` hand out none of it until
        :meth:`resume`, and at-least-once commits stop at its first message meanwhile (so
        closing leaves it to the group). At-most-once committed it when it was fetched:
        the pause moves the commit back to its first message and fetches it again after
        :meth:`resume`. :meth:`seek` on a paused partition drops it, as on any partition.

        So an at-most-once pause of a partition with fetched messages not handed out waits
        for the group's lock and writes one commit (durable as the store's ``fsync`` says):
        unlike other pauses, and the other calls that only change what the next poll does,
        it does I/O. Should the partition have moved in a rebalance this member has not
        seen, the commit is written only if the new owner has not read from it yet.
        """
        self._require_assigned(partition)
        part = self._parts[partition]
        if part.paused:
            return
        buffer = self._buffer
        held = [m for m in buffer if m.partition == partition] if buffer else []
        gave_back = False
        if held and self.delivery == "at-most-once":
            # The fetch committed past what is held. A member that takes the partition starts
            # at the group's commit when it first reads it (see _claim), with no revoke step
            # before it in which we could give these back: so the commit goes back now, or
            # the revocation would drop them, handed out by nobody. They are fetched (and
            # committed) again after resume, so even a rebalance racing this commit hands
            # none of them out twice.
            gave_back = self._give_back({partition: held[0].offset})
        part.paused = True
        if held:
            _keep_only(buffer, lambda m: m.partition != partition)
            if gave_back:
                part.position = held[0].offset
            else:
                self._held_by_pause[partition] = held

    def resume(self, partition: int) -> None:
        """Hands out and fetches ``partition``'s messages again.

        What :meth:`pause` held back comes first, in order, before anything fetched later.
        """
        self._require_assigned(partition)
        self._parts[partition].paused = False
        held = self._held_by_pause.pop(partition, None)
        if held:
            self._buffer.extendleft(reversed(held))

    def paused(self) -> list[int]:
        """Paused partitions.

        Raises:
            StoreClosedError: The consumer is closed (as Kafka's Java client refuses it).
        """
        self._check_open()
        return sorted(p for p, part in self._parts.items() if part.paused)

    def _require_assigned(self, partition: int) -> None:
        self._check_open()
        if isinstance(partition, bool) or not isinstance(partition, int):
            raise TypeError(f"partition must be int, got {type(partition).__name__}")
        if partition not in self._parts:
            raise RebalanceError(
                f"partition {partition} of {self.topic!r} is not assigned to this member "
                f"(it owns {self.assignment()})"
            )

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once closed, and always in a process forked after it was made."""
        return self._closed or self._born.inherited

    def _check_open(self) -> None:
        self._born.check()
        if self._closed:
            raise _core.StoreClosedError(
                f"consumer of group {self.group!r} on topic {self.topic!r} is closed; "
                "open a new one to consume again"
            )

    @storage_errors
    def close(self) -> None:
        """Commits what was delivered (at-least-once), leaves the group; idempotent.

        Fetched messages not handed out yet are dropped uncommitted: the group's next
        member gets them. At-most-once committed them when it fetched, and moves its
        commit back to the first of them here (a member that crashes instead loses them,
        as at-most-once may; so does one whose partition moved in a rebalance it has not
        seen, if the new owner already fetched from it). Afterwards every call that takes
        messages (iterating, :meth:`poll`, :meth:`next_nowait`), moves positions or asks
        about offsets or partitions (:meth:`committed`, :meth:`lag`, :meth:`position`,
        :meth:`assignment`, :meth:`paused`) raises :class:`StoreClosedError`.

        In a process forked after the consumer was made it only marks it closed: the
        membership and the commits are the parent's.
        """
        if self._closed:
            return
        if self._born.inherited:
            self._closed = True
            return
        try:
            if self.delivery == "at-most-once":
                self._give_back_unhanded()
            else:
                self._commit_delivered()
        except _core.TopicNotFoundError:
            pass  # deleted: nothing is left to commit to
        finally:
            self._closed = True
            # Never handed out now: the buffer is the one iterating (and tidelog.aio) takes
            # from without a check, so a closed consumer finds it empty and raises.
            self._buffer.clear()
            self._held_by_pause.clear()
            self._membership.leave()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<tidelog.Consumer topic={self.topic!r} group={self.group!r} "
            f"assignment={sorted(self._parts)} delivery={self.delivery!r}>"
        )


def _keep_only(messages: deque[Message], keep: Callable[[Message], bool]) -> None:
    """Drops the messages ``keep`` rejects, in place.

    The deque is handed out (see :attr:`Consumer.ready_messages`), so it is never replaced.
    """
    kept = [m for m in messages if keep(m)]
    messages.clear()
    messages.extend(kept)
