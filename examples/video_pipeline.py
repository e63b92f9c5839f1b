"""The video pipeline: a spike of uploads, transcoder processes sharing a work queue, a crash.

"Design a video processing pipeline where users upload videos and get them transcoded. How do
you handle spikes and ensure each video is processed exactly once?"

1. A spike: ``--uploads`` upload events arrive at once, far faster than transcoders work. A
   producer with a small bounded buffer (``on_full="block"``: backpressure, so its memory stays
   bounded) appends them to the topic ``uploads``; the store absorbs the spike on disk.
2. ``--transcoders`` transcoder PROCESSES share the work queue ``transcoders`` on ``uploads``:
   each takes one job at a time, "transcodes" it (``--work-ms`` of work), writes the output
   and acknowledges the job. A slow job never holds up the others.
3. One transcoder hangs in the middle of a job and is SIGKILLed. Its lock expires after
   ``--lock-timeout`` seconds and another transcoder takes the job over (delivery count 2).
4. Exactly once in effect: the output of an upload is a file named by the upload id, written
   atomically (temp file + rename), so transcoding an upload again (after a crash) rewrites
   the same output. The run verifies every upload has exactly one output with the right
   content, and that the queue acknowledged every upload.

Prints a summary (throughput, retries, the backlog over time) and saves a plot of the backlog
as a PNG. Run: ``python examples/video_pipeline.py`` (a few seconds); ``--help`` lists the
sizes. Exit status 0 only if the verification passed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import tidelog

TOPIC = "uploads"
QUEUE = "transcoders"
DEAD_LETTER = "uploads.dead"


def transcode(upload: dict[str, object]) -> bytes:
    """The (deterministic) output of transcoding an upload."""
    digest = hashlib.sha256(json.dumps(upload, sort_keys=True).encode()).hexdigest()
    return f"{upload['id']} 720p {digest}\n".encode()


def write_output(outputs: Path, upload_id: str, data: bytes) -> None:
    """Idempotent by upload id: the output replaces any earlier one, atomically."""
    tmp = outputs / f".{upload_id}.{os.getpid()}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, outputs / f"{upload_id}.out")


# --------------------------------------------------------------------------- transcoder


def run_transcoder(args: argparse.Namespace) -> int:
    """One transcoder process: takes jobs until the queue stays empty, then exits.

    With ``--hang-at N`` it hangs in the middle of its N-th job (after printing ``hung <id>``)
    until it is killed.
    """
    outputs = Path(args.outputs)
    attempts = (outputs / f"attempts-{os.getpid()}.log").open("a", buffering=1)
    with (
        tidelog.open(args.store) as store,
        store.work_queue(
            TOPIC,
            group=QUEUE,
            lock_timeout=args.lock_timeout,
            max_deliveries=5,
            dead_letter=DEAD_LETTER,
            prefetch=1,  # one job at a time: slow jobs spread evenly over the transcoders
        ) as queue,
    ):
        print("ready", flush=True)
        for done, job in enumerate(queue.jobs(idle_timeout=args.idle_timeout), 1):
            upload = json.loads(job.value or b"")
            attempts.write(f"{upload['id']} {job.delivery_count}\n")
            if done == args.hang_at:
                print(f"hung {upload['id']}", flush=True)
                time.sleep(3600)  # a stuck transcode: killed by the pipeline
            time.sleep(args.work_ms / 1000)  # the transcoding work
            write_output(outputs, str(upload["id"]), transcode(upload))
            queue.ack(job)
    return 0


# --------------------------------------------------------------------------- pipeline


@dataclass
class Sample:
    """The queue at one moment of the run."""

    t: float
    uploaded: int
    backlog: int
    in_flight: int
    acked: int


@dataclass
class Run:
    """What the pipeline measured."""

    samples: list[Sample] = field(default_factory=list)
    produce_s: float = 0.0
    producer_stats: dict[str, object] = field(default_factory=dict)
    killed_at: float | None = None
    hung_upload: str | None = None
    finished_s: float = 0.0


def spawn_transcoder(
    args: argparse.Namespace, outputs: Path, hang_at: int
) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--store",
        str(args.store),
        "--transcoder",
        "--outputs",
        str(outputs),
        "--work-ms",
        str(args.work_ms),
        "--lock-timeout",
        str(args.lock_timeout),
        "--idle-timeout",
        str(args.idle_timeout),
        "--hang-at",
        str(hang_at),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def sample(store: tidelog.Store, t0: float, uploaded: int) -> Sample:
    stats = store.stats()["work_queues"].get(QUEUE, {}).get(TOPIC)
    if stats is None:
        return Sample(time.monotonic() - t0, uploaded, 0, 0, 0)
    return Sample(
        time.monotonic() - t0, uploaded, stats["backlog"], stats["in_flight"], stats["acked"]
    )


def run_pipeline(args: argparse.Namespace, outputs: Path) -> Run:
    run = Run()
    with tidelog.open(args.store) as store:
        store.create_topic(TOPIC, partitions=args.partitions, exist_ok=True)
        transcoders = [
            spawn_transcoder(args, outputs, args.kill_after if i == 0 else 0)
            for i in range(args.transcoders)
        ]
        for proc in transcoders:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        victim = transcoders[0]
        t0 = time.monotonic()
        # The spike: every upload at once. The producer's buffer is small and blocks the
        # sender while it is full, so memory stays bounded however big the spike is.
        next_sample = 0.0
        with store.producer(
            name="uploader", buffer_messages=args.buffer, on_full="block"
        ) as producer:
            for i in range(args.uploads):
                upload = {"id": f"video-{i:06d}", "user": i % 97, "bytes": 1_000_000 + i}
                producer.send(TOPIC, json.dumps(upload).encode(), key=str(upload["id"]).encode())
                if time.monotonic() - t0 >= next_sample:
                    run.samples.append(sample(store, t0, i + 1))
                    next_sample += args.sample_ms / 1000
            producer.flush()
            run.produce_s = time.monotonic() - t0
            run.producer_stats = dict(producer.stats())
        # Watch the backlog drain; kill the transcoder that hangs mid-job.
        victim_out = victim.stdout
        assert victim_out is not None
        os.set_blocking(victim_out.fileno(), False)
        while any(p.poll() is None for p in transcoders):
            if run.killed_at is None:
                line = victim_out.readline()
                if line.startswith("hung "):
                    run.hung_upload = line.split()[1]
                    victim.send_signal(signal.SIGKILL)
                    run.killed_at = time.monotonic() - t0
            run.samples.append(sample(store, t0, args.uploads))
            time.sleep(args.sample_ms / 1000)
        run.finished_s = time.monotonic() - t0
        run.samples.append(sample(store, t0, args.uploads))
        for proc in transcoders:
            if proc is not victim and proc.returncode != 0:
                raise SystemExit(f"a transcoder failed with exit status {proc.returncode}")
            if proc.stdout is not None:
                proc.stdout.close()
    return run


# --------------------------------------------------------------------------- verification


def verify(args: argparse.Namespace, outputs: Path, run: Run) -> tuple[bool, list[str]]:
    """Checks every upload was transcoded exactly once in effect; returns (ok, report)."""
    lines: list[str] = []
    expected: dict[str, bytes] = {}
    with tidelog.open(args.store) as store:
        for p in range(store.topic(TOPIC).partitions):
            for msg in store.topic(TOPIC).read(p, 0):
                upload = json.loads(msg.value or b"")
                expected[str(upload["id"])] = transcode(upload)
        stats = store.stats()["work_queues"][QUEUE][TOPIC]
        dead = store.topic(DEAD_LETTER).end_offset(0) if DEAD_LETTER in store.topics() else 0
    produced = {p.stem: p.read_bytes() for p in outputs.glob("*.out")}
    missing = sorted(set(expected) - set(produced))
    extra = sorted(set(produced) - set(expected))
    wrong = sorted(k for k in expected if k in produced and produced[k] != expected[k])
    attempts: dict[str, list[int]] = {}
    for log in outputs.glob("attempts-*.log"):
        for line in log.read_text().splitlines():
            upload_id, count = line.split()
            attempts.setdefault(upload_id, []).append(int(count))
    retried = sorted(k for k, v in attempts.items() if len(v) > 1)
    ok = (
        len(expected) == args.uploads
        and not missing
        and not extra
        and not wrong
        and stats["acked"] == args.uploads
        and stats["lag"] == 0
        and dead == 0
    )
    lines.append(
        f"exactly once in effect: {'OK' if ok else 'FAILED'} — {len(expected):,} uploads, "
        f"{len(produced):,} outputs, {len(missing)} missing, {len(extra)} unexpected, "
        f"{len(wrong)} wrong; queue acked {stats['acked']:,}, lag {stats['lag']}, "
        f"dead letters {dead}"
    )
    lines.append(
        f"transcode attempts: {sum(len(v) for v in attempts.values()):,} for "
        f"{len(attempts):,} uploads; retried {len(retried)}: "
        + ", ".join(f"{k} (deliveries {sorted(attempts[k])})" for k in retried[:5])
    )
    if run.hung_upload is not None:
        redone = run.hung_upload in retried
        lines.append(
            f"the killed transcoder's job {run.hung_upload} was redelivered after the lock "
            f"timeout: {'yes' if redone else 'NO'}"
        )
        ok = ok and redone
    return ok, lines


# --------------------------------------------------------------------------- report


def summary(args: argparse.Namespace, run: Run) -> list[str]:
    stats = run.producer_stats
    drained = next((s.t for s in run.samples if s.acked >= args.uploads), run.finished_s)
    transcode_s = max(drained, 1e-9)
    peak = max((s.backlog + s.in_flight for s in run.samples), default=0)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    lines = [
        f"spike: {args.uploads:,} uploads sent in {run.produce_s:.2f} s "
        f"({args.uploads / max(run.produce_s, 1e-9):,.0f}/s); producer buffer "
        f"{args.buffer} messages, high-watermark hits {stats.get('high_watermark_hits')}, "
        f"blocked {float(str(stats.get('blocked_seconds', 0))):.3f} s, written "
        f"{stats.get('written')}; peak RSS of the pipeline {peak_rss_mib} MiB",
        f"transcoding: {args.transcoders} processes x {args.work_ms:g} ms per job; every "
        f"upload transcoded {transcode_s:.2f} s after the spike began "
        f"({args.uploads / transcode_s:,.0f} uploads/s); peak backlog {peak:,}",
    ]
    if run.killed_at is not None:
        lines.append(f"killed a transcoder mid-job at t={run.killed_at:.2f} s")
    lines.append("backlog over time (t s: waiting + in flight / acknowledged):")
    shown = [s for s in run.samples if s.t <= transcode_s] or run.samples
    step = max(1, len(shown) // 10)
    for s in shown[::step] + shown[-1:]:
        lines.append(f"  t={s.t:5.2f}  {s.backlog:6,} + {s.in_flight:2} / {s.acked:6,}")
    return lines


def plot(path: Path, args: argparse.Namespace, run: Run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t for s in run.samples]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.plot(t, [s.uploaded for s in run.samples], label="uploaded", color="tab:gray")
    ax.plot(t, [s.backlog for s in run.samples], label="backlog (waiting)", color="tab:red")
    ax.plot(t, [s.acked for s in run.samples], label="transcoded (acked)", color="tab:green")
    if run.killed_at is not None:
        ax.axvline(run.killed_at, color="black", linestyle=":", label="transcoder killed")
    ax.set_xlabel("seconds")
    ax.set_ylabel("uploads")
    ax.set_title(f"{args.uploads:,} uploads, {args.transcoders} transcoder processes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="store directory (default: a new temporary one)")
    parser.add_argument("--uploads", type=int, default=1_500, help="uploads in the spike")
    parser.add_argument("--transcoders", type=int, default=3, help="transcoder processes")
    parser.add_argument("--work-ms", type=float, default=2.0, help="work per transcode")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of uploads")
    parser.add_argument("--buffer", type=int, default=256, help="producer buffer (messages)")
    parser.add_argument("--lock-timeout", type=float, default=1.0, help="seconds")
    parser.add_argument(
        "--kill-after", type=int, default=20, help="the victim hangs in its N-th job (0: none)"
    )
    parser.add_argument("--sample-ms", type=float, default=25.0, help="backlog sampling")
    parser.add_argument("--plot", default="video_pipeline_backlog.png", help="PNG to write")
    parser.add_argument("--transcoder", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--outputs", help=argparse.SUPPRESS)
    parser.add_argument("--hang-at", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--idle-timeout", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.idle_timeout is None:
        # Transcoders wait long enough for a dead member's lock to expire before leaving.
        args.idle_timeout = args.lock_timeout + 0.25
    for name in ("uploads", "transcoders", "partitions", "buffer"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.transcoder:
        return run_transcoder(args)
    temporary = args.store is None
    if temporary:
        args.store = tempfile.mkdtemp(prefix="video-pipeline-")
    store_dir = Path(args.store)
    if store_dir.exists() and any(store_dir.iterdir()):
        if not (store_dir / "topics").is_dir():
            raise SystemExit(f"{store_dir} is not empty and not a tidelog store; not clearing it")
        shutil.rmtree(store_dir)  # a previous run's store: start from scratch
    outputs = store_dir.parent / f"{store_dir.name}-outputs"
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.mkdir(parents=True)
    try:
        run = run_pipeline(args, outputs)
        for line in summary(args, run):
            print(line)
        ok, report = verify(args, outputs, run)
        for line in report:
            print(line)
        if args.plot:
            plot(Path(args.plot), args, run)
            print(f"backlog plot: {args.plot}")
    finally:
        if temporary:
            shutil.rmtree(store_dir, ignore_errors=True)
            shutil.rmtree(outputs, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
