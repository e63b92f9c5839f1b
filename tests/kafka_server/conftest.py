from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tidelog

pytest.importorskip("kio")
pytest.importorskip("confluent_kafka")

from tidelog.kafka_server import KafkaServer


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tidelog.Store]:
    with tidelog.open(tmp_path / "store") as s:
        yield s


@pytest.fixture
def server(store: tidelog.Store) -> Iterator[KafkaServer]:
    with store.serve_kafka("127.0.0.1:0") as srv:
        yield srv
