"""Looking at the files themselves: ``dump``, ``verify`` and ``repair``.

``dump`` and ``verify`` read segment files directly, without opening the store, so they never
run recovery on what they are asked to examine; ``repair`` is the recovery.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tidelog
from tidelog import _core
from tidelog.cli._common import (
    EXIT_ERROR,
    STORE_MARKER,
    TOPIC_META,
    AddCommand,
    CliError,
    existing_store_dir,
    non_negative,
)
from tidelog.cli._format import (
    json_bytes,
    json_headers,
    json_line,
    plain_table,
    progress_bar,
    show_bytes,
    show_time,
)
from tidelog.errors import TidelogError
from tidelog.groups import check_group, list_groups
from tidelog.queue_journal import check_queue, list_queues, queue_files

__all__ = ["add_commands"]


def _partition_dirs(topic_dir: Path) -> list[Path]:
    dirs = [d for d in topic_dir.iterdir() if d.is_dir() and d.name.isdigit()]
    return sorted(dirs, key=lambda d: int(d.name))


def _topic_dir(store_dir: Path, name: str) -> Path:
    topic_dir = _core.topic_dir(store_dir, name)
    if name.startswith(".") or not (topic_dir / TOPIC_META).is_file():
        raise CliError(f'topic "{name}" does not exist in {str(store_dir)!r}')
    return topic_dir


# --- dump --------------------------------------------------------------------------------


def _dump_segments(args: argparse.Namespace) -> list[Path]:
    target = args.target
    path = Path(target)
    if (
        target.endswith(_core.SEGMENT_DATA_SUFFIX)
        or os.sep in target
        or (os.altsep and os.altsep in target)
    ):
        if path.is_file():
            return [path]
        if not path.is_dir():
            raise CliError(f"{target!r} does not exist")
        dirs = _partition_dirs(path) if (path / TOPIC_META).is_file() else [path]
    else:
        dirs = _partition_dirs(_topic_dir(existing_store_dir(args), target))
    if args.partition is not None:
        dirs = [d for d in dirs if d.name == str(args.partition)]
        if not dirs:
            raise CliError(f"no partition {args.partition} in {target!r}")
    return [seg for d in dirs for seg in _core.segment_files(d)]


def _problem_line(problem: dict[str, Any]) -> str:
    return (
        f"{problem['path']}:{problem['position']}: offset {problem['offset']}: {problem['reason']}"
    )


def _batch_json(batch: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in batch.items() if k != "records"}
    if "records" in batch:
        records = []
        for rec in batch["records"]:
            shown: dict[str, Any] = {"offset": rec["offset"], "timestamp_ms": rec["timestamp_ms"]}
            json_bytes(shown, "key", rec["key"])
            json_bytes(shown, "value", rec["value"])
            json_headers(shown, rec["headers"])
            records.append(shown)
        out["records"] = records
    return out


def _print_segment(report: dict[str, Any], records: bool) -> None:
    batches = report["batches"]
    print(f"segment {report['path']}")
    rows: list[tuple[str, ...]] = []
    bad: set[int] = set()
    for b in batches:
        first, last = b["base_offset"], b["last_offset"]
        attrs = [name for bit, name in ((1, "txn"), (2, "control")) if b["attributes"] & bit]
        if b["compression"] != "none":  # the codec; None: codec bits naming none (damage)
            attrs.append(b["compression"] or "codec?")
        if not b["crc_ok"]:
            bad.add(len(rows))
        rows.append(
            (
                str(b["position"]),
                str(first) if first == last else f"{first}-{last}",
                str(b["record_count"]),
                str(b["size"]),
                f"{b['crc']:08x}",
                "ok" if b["crc_ok"] else "BAD",
                show_time(b["first_timestamp_ms"]),
                ",".join(attrs) or "-",
                "-" if b["producer_id"] < 0 else str(b["producer_id"]),
                "-" if b["producer_epoch"] < 0 else str(b["producer_epoch"]),
                "-" if b["base_sequence"] < 0 else str(b["base_sequence"]),
            )
        )
    headers = (
        "position",
        "offsets",
        "count",
        "size",
        "crc",
        "crc ok",
        "first timestamp",
        "attrs",
        "producer id",
        "epoch",
        "sequence",
    )
    for line in plain_table(headers, rows, left=0, bad=bad):
        print(line)
    print(
        f"{len(batches)} batches; valid data ends at position {report['valid_end']} of "
        f"{report['file_len']} bytes; {report['index_entries']} index entries"
    )
    if records:
        rows = []
        for b in batches:
            for r in b.get("records", []):
                headers_shown = ", ".join(
                    f"{n}={show_bytes(v, 20)}" for n, v in r["headers"].items()
                )
                rows.append(
                    (
                        str(b["position"]),
                        str(r["offset"]),
                        show_time(r["timestamp_ms"]),
                        show_bytes(r["key"], 24),
                        show_bytes(r["value"]),
                        headers_shown or "-",
                    )
                )
        print()
        record_headers = ("batch at", "offset", "timestamp", "key", "value", "headers")
        for line in plain_table(record_headers, rows, left=6, bad=set()):
            print(line)
    print()


def _cmd_dump(args: argparse.Namespace) -> int:
    segments = _dump_segments(args)
    problems = 0
    for seg in segments:
        report = _core.inspect_segment(seg, records=args.records)
        problems += len(report["problems"])
        if args.json:
            shown = {k: v for k, v in report.items() if k != "batches"}
            shown["batches"] = [_batch_json(b) for b in report["batches"]]
            print(json_line(shown))
            continue
        _print_segment(report, args.records)
        for problem in report["problems"]:
            print(f"problem: {_problem_line(problem)}")
    return EXIT_ERROR if problems else 0


# --- verify and repair -------------------------------------------------------------------


def _verify_targets(store_dir: Path, names: list[str]) -> list[tuple[str, Path]]:
    """(label, partition directory) for each partition of the named (default: all) topics."""
    if not names:
        topics_dir = _core.topics_dir(store_dir)
        names = sorted(
            d.name
            for d in (topics_dir.iterdir() if topics_dir.is_dir() else [])
            if not d.name.startswith(".") and (d / TOPIC_META).is_file()
        )
    return [
        (f"{name}/{d.name}", d)
        for name in names
        for d in _partition_dirs(_topic_dir(store_dir, name))
    ]


def _cmd_verify(args: argparse.Namespace) -> int:
    store_dir = existing_store_dir(args)
    targets = _verify_targets(store_dir, args.topics)
    work = [(label, seg) for label, d in targets for seg in _core.segment_files(d)]
    queues = [(t, g) for t, g in list_queues(store_dir) if not args.topics or t in args.topics]
    groups = [(t, g) for t, g in list_groups(str(store_dir)) if not args.topics or t in args.topics]
    # Named producers' transaction state logs (`<name>.txn.*`), whatever the topics asked.
    producers_dir = _core.producers_dir(store_dir)
    lock_suffix = _core.TXN_LOCK_SUFFIX
    txn_logs = sorted(
        p.name[: -len(lock_suffix)] + _core.TXN_SUFFIX
        for p in producers_dir.glob("*" + lock_suffix)
    )
    newest = {label: seg for label, seg in work}  # each partition's active segment
    problems = batches = 0
    with progress_bar(not args.quiet and sys.stderr.isatty()) as progress:
        total = len(work) + len(queues) + len(groups) + len(txn_logs)
        task = progress.add_task("verifying", total=total)
        previous: tuple[str, int] | None = None  # (partition label, next offset it expects)
        for label, seg in work:
            progress.update(task, description=f"verifying {label}")
            found: list[str] = []
            try:
                report = _core.inspect_segment(seg)
            except (TidelogError, OSError) as e:
                found.append(f"{seg}:0: offset ?: cannot inspect: {e}")
                report = None
            notes: list[str] = []
            if report is not None:
                torn = newest[label] == seg and _torn_tail(report)
                lines = [_problem_line(p) for p in report["problems"]]
                if torn:
                    notes = [
                        f"{line} (torn tail: truncated when the store opens)" for line in lines
                    ]
                else:
                    found += lines
                batches += len(report["batches"])
                base = int(report["base_offset"])
                if previous is not None and previous[0] == label and previous[1] != base:
                    found.append(
                        f"{seg}:0: offset {base}: segment starts at offset {base} but the "
                        f"previous segment ends before offset {previous[1]}"
                    )
                if report["batches"]:
                    previous = (label, report["batches"][-1]["last_offset"] + 1)
                elif previous is None or previous[0] != label:
                    # An empty segment (compaction removed everything in it) says nothing
                    # about where the next one starts.
                    previous = None
            for line in [*found, *notes]:
                print(line, flush=True)
            problems += len(found)
            progress.advance(task)
        for topic, group in queues:
            # A work queue's state (snapshot and journal): every CRC, and every record
            # applied. A torn tail is not damage: the next member truncates it.
            progress.update(task, description=f"verifying work queue {group} of {topic}")
            try:
                check_queue(queue_files(store_dir, topic, group))
            except (TidelogError, OSError) as e:
                print(f"work queue {group!r} of topic {topic!r}: {e}", flush=True)
                problems += 1
            progress.advance(task)
        for topic, group in groups:
            # A consumer group's membership state: every CRC, and the state decoded.
            progress.update(task, description=f"verifying consumer group {group} of {topic}")
            try:
                check_group(str(store_dir), topic, group)
            except (TidelogError, OSError) as e:
                print(f"consumer group {group!r} of topic {topic!r}: {e}", flush=True)
                problems += 1
            progress.advance(task)
        for name in txn_logs:
            progress.update(task, description=f"verifying producer {name}")
            try:
                _core.read_state_log(producers_dir, name)
            except (TidelogError, OSError) as e:
                print(
                    f"transaction state of producer {name.removesuffix(_core.TXN_SUFFIX)!r}: {e}",
                    flush=True,
                )
                problems += 1
            progress.advance(task)
    for label, d in targets:
        found, notes = _recovery_lines(label, d)
        for line in [*found, *notes]:
            print(line, flush=True)
        problems += len(found)
    if not args.quiet:
        also = f" and {len(queues)} work queues" if queues else ""
        also += f" and {len(groups)} consumer groups" if groups else ""
        print(
            f"checked {len(work)} segments ({batches} batches) of {len(targets)} partitions"
            f"{also}: {problems or 'no'} problem{'s' if problems != 1 else ''}"
        )
    return EXIT_ERROR if problems else 0


def _torn_tail(report: dict[str, Any]) -> bool:
    """True when a segment's problems are a torn tail (see ``inspect_segment``).

    In a partition's newest segment that is what a crash in the middle of an append leaves,
    and opening the store truncates it (recording it). Index entries pointing past the
    intact batches go with it.
    """
    if not report["torn_tail"]:
        return False
    intact = [b for b in report["batches"] if b["crc_ok"]]
    after = max((b["last_offset"] + 1 for b in intact), default=report["base_offset"])
    return all(p["offset"] >= after for p in report["problems"] if p["path"] != report["path"])


def _event_line(label: str, event: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(event["time_ms"] / 1000, tz=UTC).isoformat(timespec="seconds")
    first, end = event["first_offset"], event["end_offset"]
    offsets = f"offsets {first}..{end - 1}" if end > first else f"from offset {first}"
    where = f" into {event['path']}" if event["path"] else ""
    return (
        f"{label}: {event['kind']}: {offsets} ({event['bytes']} bytes at position "
        f"{event['position']} of segment {event['segment_base']}) removed by recovery at "
        f"{when}{where}"
    )


def _recovery_lines(label: str, partition_dir: Path) -> tuple[list[str], list[str]]:
    """(problems, notes) from what recovery removed from a partition.

    Quarantined data is a problem (damage was found and data moved aside until someone
    looks at it); a truncated torn tail is what a crash leaves, and unsynced data cut after
    a restart is what a power loss may take under the store's fsync policy: only notes.
    """
    try:
        events = _core.recovery_events(partition_dir)
    except (TidelogError, OSError) as e:
        return [f"{partition_dir}:0: offset ?: cannot read recovery records: {e}"], []
    problems = [_event_line(label, e) for e in events if e["kind"] == "quarantined"]
    notes = [_event_line(label, e) for e in events if e["kind"] != "quarantined"]
    return problems, notes


def _cmd_repair(args: argparse.Namespace) -> int:
    if args.store:
        args.dir = args.store  # a kafka:// URL is refused by existing_store_dir
    store_dir = existing_store_dir(args)
    if not (store_dir / STORE_MARKER).is_file():
        raise CliError(f"{str(store_dir)!r} is not a tidelog store (no {STORE_MARKER})")

    def events() -> list[dict[str, Any]]:
        from tidelog.stats import recovery_events

        names = [
            d.name
            for d in _core.topics_dir(store_dir).iterdir()
            if not d.name.startswith(".") and (d / TOPIC_META).is_file()
        ]
        return recovery_events(str(store_dir), sorted(names))

    before = len(events())
    with tidelog.open(store_dir, on_corruption="quarantine") as store:
        # Opening a partition is what recovers it.
        for name in store.topics(internal=True):
            store.topic(name)
    repaired = events()[before:]
    for event in repaired:
        print(_event_line(f"{event['topic']}/{event['partition']}", event))
    if not repaired:
        print("nothing to repair")
    return 0


def add_commands(command: AddCommand) -> None:
    """Adds ``dump``, ``verify`` and ``repair``."""
    sub = command(
        "dump",
        _cmd_dump,
        "Show the batches (and records) of segment files",
        "SEGMENT_OR_TOPIC is a segment data file (.../00000000000000000000.log), a\n"
        "partition or topic directory (any argument containing '/'), or a topic name of\n"
        "the store. Shows each batch's position, offsets, size, CRC and whether it\n"
        "matches, and producer id, epoch and sequence. Exits 1 if a segment has a problem.",
    )
    sub.add_argument("target", metavar="SEGMENT_OR_TOPIC")
    sub.add_argument("-p", "--partition", type=non_negative, metavar="N", help="only partition N")
    sub.add_argument("-r", "--records", action="store_true", help="also show every record")
    sub.add_argument(
        "--json", action="store_true", help="one JSON object per segment instead of tables"
    )

    sub = command(
        "verify",
        _cmd_verify,
        "Check every batch CRC and index of the store, and the state of its work queues,\n"
        "consumer groups and named producers' transactions",
        "Reads the segment files without opening the store, so it can run next to writers\n"
        "(the tail of an active segment being written may then show up as a problem).\n"
        "Each work queue's snapshot and journal are checked too (a torn tail left by a\n"
        "crash is not a problem: the next member truncates it), and so are each consumer\n"
        "group's membership state and each named producer's transaction state.\n"
        "Prints each problem as 'path:position: offset N: reason' and exits 1 if there\n"
        "is any. Also lists what recovery removed: data moved to quarantine is a problem,\n"
        "a truncated torn tail (what a crash leaves) only a note.",
    )
    sub.add_argument("topics", nargs="*", metavar="TOPIC", help="only these topics")
    sub.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no summary line"
    )

    sub = command(
        "repair",
        _cmd_repair,
        "Recover every partition, moving damaged data aside",
        'Opens every topic of the store with on_corruption="quarantine": damage in a\n'
        "partition's newest segment that is followed by valid batches (which a plain open\n"
        "refuses) is moved, with everything after it, into <partition>/quarantine/ and\n"
        "recorded; torn tails are truncated. Prints what was removed. Run it while no\n"
        "other process has the store open (a partition in use is not recovered).",
    )
    sub.add_argument(
        "store", nargs="?", metavar="DIR", help="the store directory (instead of --dir)"
    )
