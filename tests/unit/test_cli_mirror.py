"""``tidelog mirror``'s arguments (the forwarding itself: tests/conformance/test_mirror_kill.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import tidelog
from tidelog.cli import main


def test_mirror_needs_a_kafka_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with tidelog.open(tmp_path / "s") as store:
        store.create_topic("t")
    assert main(["mirror", str(tmp_path / "s"), "t", "http://127.0.0.1:9092"]) == 2
    assert "kafka:// URL" in capsys.readouterr().err


def test_mirror_takes_the_store_from_dir_or_a_positional(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mirror", "t"]) == 2
    assert "usage: tidelog mirror [DIR] TOPIC" in capsys.readouterr().err
    missing = tmp_path / "nope"
    assert main(["--dir", str(missing), "mirror", "t", "kafka://127.0.0.1:1"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_mirror_is_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["mirror", "--help"])
    out = capsys.readouterr().out
    assert "[DIR] TOPIC kafka://HOST:PORT" in out
    assert "--until-caught-up" in out
