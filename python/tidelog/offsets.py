"""Durable consumer-group offsets, kept the way Kafka keeps them: in an internal log.

Commits are records of the internal topic ``__consumer_offsets`` (in the partition chosen by
the group's name), one per committed partition, keyed by (group, topic, incarnation,
partition); a commit of several partitions is one batch, written atomically by the storage
engine, so it is never half-applied. With ``fsync="always"`` it is on disk when ``commit``
returns. The newest record for a (group, topic, partition) wins. Readers in any process catch
up by reading the records appended since they last looked.

The records' bytes, and reading them back, belong to the core (``_core.OffsetTable``; the
layouts of every version are in ``docs/FORMAT.md``). This module keeps the policy: what a
commit names and when it counts.

A commit names the topic's incarnation (its identity, new each time a name is created), so a
commit made for a deleted topic never applies to a topic created again under the name, however
the deletion, the re-creation and the commits interleave across processes, and whether or not
the deleting process lived to write the record that forgets the old commits. Commits written
by the first version of the layout name none and apply to whichever topic has the name.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidelog import _core

__all__ = ["OFFSETS_TOPIC", "Committed", "OffsetStore"]

OFFSETS_TOPIC = _core.OFFSETS_TOPIC


@dataclass(frozen=True)
class Committed:
    """A committed position: the next offset to read, and optional metadata.

    ``timestamp_ms`` is when the commit was written (the commit record's timestamp): a
    commit older than a recovery that removed the offsets it points into is stale.
    """

    offset: int
    metadata: str = ""
    timestamp_ms: int = 0


class OffsetStore:
    """Commits and looks up group offsets in one store; safe to share between threads."""

    def __init__(self, core: _core.Store) -> None:
        """Opens (creating if needed) the internal offsets topic of ``core``."""
        self._table = _core.OffsetTable(core)

    def committer(
        self,
        group: str,
        topic: _core.Topic,
        incarnation: int,
        members: _core.Group | None = None,
    ) -> _core.OffsetCommitter:
        """Durable commits of ``group`` on ``topic``'s ``incarnation``, the route looked up once.

        ``committer.commit(offsets, metadata, generation)`` checks every offset against its
        partition's end and records ``offsets`` (partition -> next offset) as one batch:
        all partitions are committed together or not at all. The newest commits are read
        back from the records (see :meth:`committed`), as every process reads them.

        With ``members`` (the group's membership state) a commit of a generation older than
        the group's current one is refused with ``RebalanceError``, checked where commits
        are ordered (Kafka's coordinator answers ``ILLEGAL_GENERATION``). Without, such a
        commit is written but every reader passes over it once a newer generation
        committed the partition (see :meth:`committed`).
        """
        return self._table.committer(group, topic, incarnation, members)

    def send_commit(
        self,
        producer: _core.Producer,
        group: str,
        topic: str,
        incarnation: int,
        offsets: dict[int, int],
        generation: int = -1,
    ) -> None:
        """Sends the commit records into ``producer``'s open transaction.

        The commit becomes visible exactly when the transaction commits.
        """
        if not offsets:
            return
        partition, records = self._table.commit_records(
            group, topic, incarnation, offsets, generation
        )
        for key, value in records:
            producer.send(OFFSETS_TOPIC, value, key=key, partition=partition)

    def forget_topic(self, topic: str, incarnation: int) -> None:
        """Forgets every group's commits on ``topic``'s ``incarnation`` (it was deleted).

        Commits of a topic created again under the name meanwhile are kept: they name
        another incarnation.
        """
        self._table.forget_topic(topic, incarnation)

    def committed(self, group: str, topic: str, incarnation: int) -> dict[int, Committed]:
        """Returns ``group``'s newest commit of every partition of ``topic`` (``incarnation``).

        A commit of a lower group generation than the one its partition holds is passed
        over (fenced): a member that lost the partition in a rebalance it had not seen
        yet cannot move the new owner's commit back. A commit of the same generation (a
        seek back) applies, and so does one of no generation (-1: a Kafka client's manual
        assignment, an admin tool), which clears the fence.

        Raises:
            CorruptRecordError: A commit record cannot be decoded (names its file).
        """
        commits = self._table.committed(group, topic, incarnation)
        return {p: Committed(o, m, t) for p, (o, m, t) in commits.items()}

    def highest_generation(self, group: str, topic: str, incarnation: int) -> int:
        """The highest group generation among ``group``'s commits (-1: none).

        A group's generations start above it (:class:`tidelog.groups.Membership`): a group
        whose state was lost or rolled back would otherwise start below the commits that
        fence older generations, and its members' commits would be passed over.

        Raises:
            CorruptRecordError: A commit record cannot be decoded (names its file).
        """
        return self._table.highest_generation(group, topic, incarnation)

    def committed_offsets(self, group: str, topic: str, incarnation: int) -> dict[int, int]:
        """:meth:`committed` reduced to the offsets: ``{partition: offset}`` (for metrics).

        Raises:
            CorruptRecordError: A commit record cannot be decoded (names its file).
        """
        return {p: o for p, (o, _m, _t) in self._table.committed(group, topic, incarnation).items()}

    def groups(self) -> set[tuple[str, str]]:
        """Every (group, topic name) with a commit, for any incarnation of the topic."""
        return self._table.groups()

    def has_pending(self, group: str, topic: str) -> bool:
        """True while a commit of ``group`` on ``topic`` sits in a transaction still open.

        Its outcome decides where the group resumes, so an exactly-once consumer waits.
        Commits inside a transaction still open are not applied until it ends, but the
        plain commits after them are (an open transaction of one group must not hide other
        groups' commits, as Kafka's coordinator keeps pending offsets apart).
        """
        return self._table.has_pending(group, topic)
