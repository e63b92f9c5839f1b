"""``examples/video_pipeline.py`` runs end to end (small sizes) and verifies exactly-once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "video_pipeline.py"


def test_video_pipeline_transcodes_every_upload_exactly_once(tmp_path: Path) -> None:
    plot = tmp_path / "backlog.png"
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--store",
            str(tmp_path / "store"),
            "--uploads",
            "300",
            "--transcoders",
            "3",
            "--work-ms",
            "1",
            "--lock-timeout",
            "0.5",
            "--kill-after",
            "5",
            "--plot",
            str(plot),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "exactly once in effect: OK — 300 uploads, 300 outputs, 0 missing" in out
    assert "killed a transcoder mid-job" in out
    assert "was redelivered after the lock timeout: yes" in out
    assert plot.read_bytes().startswith(b"\x89PNG")
    outputs = sorted((tmp_path / "store-outputs").glob("*.out"))
    assert len(outputs) == 300
