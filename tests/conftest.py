from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tidelog


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tidelog.Store]:
    with tidelog.open(tmp_path / "store") as s:
        yield s
