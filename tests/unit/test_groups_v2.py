"""Consumer-group membership kept by the core (issue 14, item 3).

The state of a group lives in ``groups/<topic>/<name>.{lock,snapshot,journal,live}`` (see
docs/FORMAT.md): damage to any of them is reported naming the file (by joining, by reading the
state for ``stats()``, and by ``tidelog verify``), never turned into an empty group whose
generation goes back; groups of the first layout (``<name>.json`` + ``<name>.gen``) are
converted once, keeping the generation; changes are as durable as the store's ``fsync``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tidelog
from tidelog import _core
from tidelog.groups import Membership, list_groups, read_state

#: Journal size past which the core writes the state as a snapshot.
COMPACT_BYTES = 64 << 10


def _dir(store_dir: Path, topic: str = "t") -> Path:
    return store_dir / "groups" / topic


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _generation(store_dir: Path, topic: str = "t", group: str = "g") -> int:
    return read_state(str(store_dir), topic, group).generation


def _journal_generations(store_dir: Path, name: str = "g") -> list[int]:
    """The generation of every record in the group's journal, in order."""
    found = _core.read_state_log(_dir(store_dir), name)
    assert found is not None
    return [struct.unpack_from("<Q", r)[0] for r in found[2]]


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A store with topic ``t`` (4 partitions) whose group ``g`` had a few changes."""
    path = tmp_path / "store"
    with tidelog.open(path) as store:
        store.create_topic("t", partitions=4)
        for _ in range(3):
            store.consumer("t", group="g").close()
    return path


def test_state_is_kept_in_the_core_files(store_dir: Path) -> None:
    names = sorted(p.name for p in _dir(store_dir).iterdir())
    assert names == ["g.journal", "g.live", "g.lock"]
    group = _core.Group(store_dir, "t", "g")
    assert dict(group.files) == {
        kind: _dir(store_dir) / f"g.{kind}" for kind in ("lock", "snapshot", "journal", "live")
    }
    group.close()
    # Three joins and three leaves: six generations, each a record of its own.
    assert _journal_generations(store_dir) == [1, 2, 3, 4, 5, 6]
    assert list_groups(str(store_dir)) == [("t", "g")]
    state = read_state(str(store_dir), "t", "g")
    assert (state.generation, state.members, state.assignment) == (6, {}, {})


def _join_fails_naming(store_dir: Path, file_name: str) -> None:
    with tidelog.open(store_dir) as store:
        with pytest.raises(tidelog.CorruptRecordError, match=file_name.replace(".", r"\.")):
            store.consumer("t", group="g")
        with pytest.raises(tidelog.CorruptRecordError, match=file_name.replace(".", r"\.")):
            store.stats()
    bad = _cli("verify", "-q", "-d", store_dir)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert file_name in bad.stdout and "consumer group 'g'" in bad.stdout


def _flip(path: Path, position: int) -> bytes:
    data = path.read_bytes()
    damaged = bytearray(data)
    damaged[position] ^= 0x20
    path.write_bytes(bytes(damaged))
    return data


def _after_repair_generation_grows(store_dir: Path, path: Path, good: bytes, seen: int) -> None:
    assert _cli("verify", "-q", "-d", store_dir).returncode == 1, "the damage is still there"
    path.write_bytes(good)
    assert _cli("verify", "-q", "-d", store_dir).returncode == 0
    with tidelog.open(store_dir) as store, store.consumer("t", group="g") as c:
        assert c._membership.generation > seen


def test_a_bit_flip_in_the_journal_is_reported_not_reset(store_dir: Path) -> None:
    journal = _dir(store_dir) / "g.journal"
    seen = _generation(store_dir)
    records = _core.read_state_log(_dir(store_dir), "g")
    assert records is not None
    # Inside the first record: records after it are valid, so this is not a torn tail.
    good = _flip(journal, 24 + 20 + 3)
    _join_fails_naming(store_dir, "g.journal")
    assert journal.read_bytes() != good, "the damaged file is left as it is"
    _after_repair_generation_grows(store_dir, journal, good, seen)


def test_garbage_in_the_journal_is_reported(store_dir: Path) -> None:
    journal = _dir(store_dir) / "g.journal"
    good = journal.read_bytes()
    journal.write_bytes(os.urandom(len(good)))
    _join_fails_naming(store_dir, "g.journal")
    _after_repair_generation_grows(store_dir, journal, good, 6)


def test_a_truncated_journal_header_is_reported(store_dir: Path) -> None:
    journal = _dir(store_dir) / "g.journal"
    good = journal.read_bytes()
    journal.write_bytes(good[:10])
    _join_fails_naming(store_dir, "g.journal")
    _after_repair_generation_grows(store_dir, journal, good, 6)


def test_a_torn_last_record_never_moves_the_generation_back(store_dir: Path) -> None:
    journal = _dir(store_dir) / "g.journal"
    data = journal.read_bytes()
    journal.write_bytes(data[:-5])  # a crash cut the last change short
    assert _cli("verify", "-q", "-d", store_dir).returncode == 0, "a torn tail is no damage"
    with tidelog.open(store_dir) as store, store.consumer("t", group="g") as c:
        # The record of generation 6 is gone; the live word still says 6.
        assert c._membership.generation == 7
    assert _journal_generations(store_dir) == [1, 2, 3, 4, 5, 7, 8]


def _with_snapshot(store_dir: Path) -> int:
    """Writes a state large enough to be compacted into a snapshot; returns its generation."""
    group = _core.Group(store_dir, "t", "g")
    generation, _ = group.lock()
    pad = "x" * COMPACT_BYTES
    written = group.write(json.dumps({"members": {}, "assignment": {}, "pad": pad}).encode())
    group.unlock()
    group.close()
    assert written == generation + 1
    assert (_dir(store_dir) / "g.snapshot").exists()
    return written


def test_damage_to_the_snapshot_is_reported(store_dir: Path) -> None:
    seen = _with_snapshot(store_dir)
    snapshot = _dir(store_dir) / "g.snapshot"
    good = _flip(snapshot, 100)
    _join_fails_naming(store_dir, "g.snapshot")
    _after_repair_generation_grows(store_dir, snapshot, good, seen)
    snapshot.write_bytes(good[: len(good) // 2])
    _join_fails_naming(store_dir, "g.snapshot")
    _after_repair_generation_grows(store_dir, snapshot, good, seen)


def test_a_state_whose_crc_holds_but_is_not_a_group_is_reported(store_dir: Path) -> None:
    group = _core.Group(store_dir, "t", "g")
    group.lock()
    group.write(b"not json")
    group.unlock()
    group.close()
    with (
        tidelog.open(store_dir) as store,
        pytest.raises(tidelog.CorruptRecordError, match=r"group 'g'.*no valid state"),
    ):
        store.consumer("t", group="g")
    assert _cli("verify", "-q", "-d", store_dir).returncode == 1


@pytest.mark.parametrize(
    ("position", "value"),
    [(8, b"garbage!"), (0, struct.pack("<Q", 2**64 - 1))],
    ids=["magic", "generation"],
)
def test_damage_to_the_live_file_is_reported(store_dir: Path, position: int, value: bytes) -> None:
    live = _dir(store_dir) / "g.live"
    good = live.read_bytes()
    data = bytearray(good)
    data[position : position + 8] = value
    live.write_bytes(bytes(data))
    _join_fails_naming(store_dir, "g.live")
    _after_repair_generation_grows(store_dir, live, good, 6)


def test_a_lost_live_file_is_rebuilt_without_going_back(store_dir: Path) -> None:
    live = _dir(store_dir) / "g.live"
    live.write_bytes(b"")  # e.g. lost with a power cut: the state log still has generation 6
    with tidelog.open(store_dir) as store, store.consumer("t", group="g") as c:
        assert c._membership.generation == 7
        assert c._membership.current_generation() == 7
    live.unlink()
    assert _generation(store_dir) == 8
    with tidelog.open(store_dir) as store, store.consumer("t", group="g") as c:
        assert c._membership.generation == 9


def _legacy_layout(store_dir: Path, topic: str, group: str, generation: int) -> Path:
    """Group files as the first version's ``groups.py`` wrote them (bytes for bytes)."""
    base = _dir(store_dir, topic)
    base.mkdir(parents=True, exist_ok=True)
    safe = group if group.isalnum() else "~" + group.encode().hex()
    member = "host-4242-0123abcd"
    state = {
        "generation": generation,
        "members": {member: {"pid": 4242, "joined_ms": 1_700_000_000_000}},
        "assignment": {member: [0, 1, 2, 3]},
    }
    (base / f"{safe}.json").write_text(json.dumps(state))  # json.dump's default separators
    (base / f"{safe}.lock").write_bytes(b"")
    (base / f"{safe}.gen").write_bytes(struct.pack("<Q", generation))
    (base / f"{safe}.members").mkdir()
    # A lease far in the future: the member is dropped all the same (it rejoins if alive).
    (base / f"{safe}.members" / member).write_bytes(struct.pack("<q", 2**62))
    return base


def test_the_first_layout_is_converted_once_keeping_the_generation(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir) as store:
        store.create_topic("t", partitions=4)
    base = _legacy_layout(store_dir, "t", "g", 41)
    _legacy_layout(store_dir, "t", "odd name", 9)
    assert list_groups(str(store_dir)) == [("t", "g"), ("t", "odd name")]
    assert _generation(store_dir) == 41, "read as it is before the conversion"
    assert _cli("verify", "-q", "-d", store_dir).returncode == 0
    assert (base / "g.json").exists(), "reading converts nothing"
    with tidelog.open(store_dir) as store:
        with store.consumer("t", group="g") as a, store.consumer("t", group="g") as b:
            assert a._membership.generation == 42, "the old member was dropped, a joined"
            b.poll(timeout=0)
            a.poll(timeout=0)
            assert sorted(a.assignment() + b.assignment()) == [0, 1, 2, 3]
            assert b._membership.generation == 43
        with store.consumer("t", group="odd name") as c:
            assert c._membership.generation == 10
            assert c.assignment() == [0, 1, 2, 3]
    names = sorted(p.name for p in base.iterdir())
    assert names == [
        "g.journal",
        "g.live",
        "g.lock",
        "g.snapshot",
        "~6f6464206e616d65.journal",
        "~6f6464206e616d65.live",
        "~6f6464206e616d65.lock",
        "~6f6464206e616d65.snapshot",
    ]
    assert _generation(store_dir) == 45
    assert _cli("verify", "-q", "-d", store_dir).returncode == 0


def test_a_damaged_first_layout_file_is_reported_not_reset(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir) as store:
        store.create_topic("t", partitions=4)
    base = _legacy_layout(store_dir, "t", "g", 41)
    good = (base / "g.json").read_bytes()
    (base / "g.json").write_bytes(good[: len(good) // 2])
    _join_fails_naming(store_dir, "g.json")
    (base / "g.json").write_bytes(good)
    with tidelog.open(store_dir) as store, store.consumer("t", group="g") as c:
        assert c._membership.generation == 42


def test_a_member_removed_while_alive_rejoins_at_its_next_heartbeat(tmp_path: Path) -> None:
    with tidelog.open(tmp_path / "store") as store:
        store.create_topic("t", partitions=4)
        a = store.consumer("t", group="g", lease_seconds=30)
        b = store.consumer("t", group="g", lease_seconds=30)
        a.poll(timeout=0)
        assert len(a.assignment()) == len(b.assignment()) == 2
        group = b._membership._group
        # b's lease is taken from it (as when its lease ran out while it was stalled) ...
        lease = b._membership._lease
        assert lease is not None and group.release_lease(*lease)
        # ... and a, at its next heartbeat, finds it expired and removes it.
        a._membership.heartbeat_due = 0.0  # due
        a.poll(timeout=0)
        assert a.assignment() == [0, 1, 2, 3]
        # b notices the rebalance at its next poll and joins again; a then gives way.
        b.poll(timeout=0)
        a.poll(timeout=0)
        assert len(b.assignment()) == 2
        assert sorted(a.assignment() + b.assignment()) == [0, 1, 2, 3]
        # Without a rebalance to notice: the lease alone is gone, b's plain renewal fails
        # and b joins again under the lock, with a new lease.
        generation = b._membership.generation
        lease = b._membership._lease
        assert lease is not None and group.release_lease(*lease)
        b._membership.heartbeat_due = 0.0
        b.poll(timeout=0)
        assert b._membership._lease != lease
        assert b._membership.generation == generation + 1
        a.poll(timeout=0)
        assert sorted(a.assignment() + b.assignment()) == [0, 1, 2, 3]
        held = {(s, i) for s, i, _ in group.leases()}
        assert held == {a._membership._lease, b._membership._lease}, "no lease left behind"
        a.close()
        b.close()
        assert group.leases() == []


@pytest.mark.parametrize("fsync", ["never", "interval", "always"])
def test_membership_changes_follow_the_stores_fsync_policy(tmp_path: Path, fsync: str) -> None:
    # `syncs` counts the core's fdatasyncs of the group's journal by this member's handle.
    opened = tidelog.open(tmp_path / "store", fsync=fsync, fsync_interval_ms=3_600_000)  # type: ignore[arg-type]
    with opened as store:
        store.create_topic("t", partitions=2)
        with store.consumer("t", group="g") as consumer:
            group = consumer._membership._group
            # "always": the join was synced before it counted; otherwise not yet.
            assert group.syncs == {"never": 0, "interval": 0, "always": 1}[fsync]
            store._core.sync()  # what the background syncer does every interval
            assert group.syncs == {"never": 0, "interval": 1, "always": 1}[fsync]
            store._core.sync()
            assert group.syncs == {"never": 0, "interval": 1, "always": 1}[fsync], "nothing new"
            consumer._membership.heartbeat(force=True)  # no change: nothing written
            assert group.syncs == {"never": 0, "interval": 1, "always": 1}[fsync]
        # Leaving is a change too ("interval": synced by the close).
        assert group.syncs == {"never": 0, "interval": 2, "always": 2}[fsync]


def test_delete_topic_removes_its_groups_in_the_core(tmp_path: Path) -> None:
    with tidelog.open(tmp_path / "store") as store:
        store.create_topic("t", partitions=2)
        store.consumer("t", group="g").close()
        assert _dir(tmp_path / "store").exists()
        store._core.delete_topic("t")  # no path given: the core knows it
        assert not _dir(tmp_path / "store").exists()
        assert list_groups(store.path) == []
        store.create_topic("t", partitions=2)
        with store.consumer("t", group="g") as c:
            assert c._membership.generation == 1, "a new topic's group starts afresh"


def test_a_member_of_a_deleted_topic_raises_and_leaves_quietly(tmp_path: Path) -> None:
    with tidelog.open(tmp_path / "store") as store:
        store.create_topic("t", partitions=2)
        c = store.consumer("t", group="g")
        store.delete_topic("t")
        with pytest.raises(tidelog.TopicNotFoundError):
            c._membership.join()
        store.create_topic("t", partitions=2)
        with store.consumer("t", group="g") as fresh:
            assert fresh._membership.generation == 1
        c.close()
        assert _generation(tmp_path / "store") == 2, "the old member wrote nothing"


def test_core_arguments_are_checked(tmp_path: Path) -> None:
    group = _core.Group(tmp_path, "t", "g")
    with pytest.raises(tidelog.InvalidConfigError, match="not locked"):
        group.write(b"{}")
    with pytest.raises(tidelog.InvalidConfigError, match="not locked"):
        group.claim_lease(int(time.time() * 1000))
    with pytest.raises(tidelog.InvalidConfigError, match="slot"):
        group.renew_lease(-1, 1, 5)
    with pytest.raises(tidelog.InvalidConfigError, match="expires_ms"):
        group.renew_lease(0, 1, 0)
    with pytest.raises(tidelog.InvalidConfigError, match="fsync"):
        _core.Group(tmp_path, "t", "g", fsync="interval")
    with pytest.raises(tidelog.InvalidConfigError, match="empty"):
        _core.Group(tmp_path, "t", "")
    group.close()
    shutil.rmtree(tmp_path / "groups")
    assert _core.read_group(tmp_path, "t", "g") is None


class _FailingWrites:
    """A group handle whose writes fail (a full disk), everything else passed through."""

    def __init__(self, group: _core.Group) -> None:
        self._group = group

    def write(self, body: bytes, above: int = 0) -> int:
        raise OSError(28, "No space left on device")

    def __getattr__(self, name: str) -> object:
        return getattr(self._group, name)


def test_a_join_whose_write_fails_is_retried_not_taken_for_done(tmp_path: Path) -> None:
    with tidelog.open(tmp_path / "store") as store:
        store.create_topic("t", partitions=2)
        first = store.consumer("t", group="g")
        m = Membership(store.path, "t", "g", 2, 30.0, core=store._core)
        real = m._group
        m._group = _FailingWrites(real)  # type: ignore[assignment]
        with pytest.raises(OSError, match="No space"):
            m.join()
        assert m._lease is None and len(real.leases()) == 1, "the claimed lease was given back"
        m._group = real
        m.heartbeat_due = 0.0
        assert m.heartbeat() is True, "joins under the lock, not a plain renewal"
        assert m.member_id in read_state(store.path, "t", "g").members
        first.poll(timeout=0)
        assert sorted(first.assignment() + m.assignment) == [0, 1]
        m.leave()
        first.close()
