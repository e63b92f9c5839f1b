"""The conformance suite runs every API test against a local store and a Kafka store.

The Kafka broker (single-node KRaft, Apache Kafka 4.2+, from the Maven Central jars cached in
``~/.cache/tidelog-bench/kafka``) starts once per test session on a free loopback port and
stops at the end, also when tests fail; a killed run takes it down too (the broker dies with
its parent, see ``benches/kafka/broker.py``). Set ``TIDELOG_TEST_KAFKA=0`` to leave the
Kafka half out (the tests are then skipped, saying so).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tidelog

from benches.kafka.broker import BrokerUnavailable, KafkaBroker


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    if os.environ.get("TIDELOG_TEST_KAFKA") == "0":
        pytest.skip("TIDELOG_TEST_KAFKA=0: the Kafka half of the suite is off")
    broker = KafkaBroker(tmp_path_factory.mktemp("broker"), heap="384m")
    try:
        broker.start()
    except BrokerUnavailable as e:
        if os.environ.get("CI"):
            raise  # CI must run the Kafka half, not skip it
        pytest.skip(f"no Kafka broker: {e}")
    try:
        yield broker
    finally:
        broker.stop()


def _drop_topics(store: Any) -> None:
    for name in store.topics():
        store.delete_topic(name)


@pytest.fixture(params=["local", pytest.param("kafka", marks=pytest.mark.kafka)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A local store, or a store on the session's Kafka broker (emptied after the test)."""
    if backend == "local":
        with tidelog.open(tmp_path / "store") as s:
            yield s
        return
    broker: KafkaBroker = request.getfixturevalue("kafka_broker")
    s = tidelog.open(f"kafka://{broker.bootstrap}")
    try:
        yield s
    finally:
        s.close()
        with tidelog.open(f"kafka://{broker.bootstrap}") as admin:
            _drop_topics(admin)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # @pytest.mark.local_only(reason): a test that cannot apply to Kafka (README.md's table
    # lists the same reasons) runs on the local backend only.
    for item in items:
        marker = item.get_closest_marker("local_only")
        if marker is not None and "[kafka" in item.nodeid:
            item.add_marker(pytest.mark.skip(reason=f"not on Kafka: {marker.args[0]}"))


@pytest.fixture
def location(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a store is, for APIs that open it themselves (tidelog.aio, the CLI): a local
    directory, or the session's Kafka broker as a kafka:// URL (emptied after the test)."""
    if backend == "local":
        yield str(tmp_path / "store")
        return
    broker: KafkaBroker = request.getfixturevalue("kafka_broker")
    try:
        yield f"kafka://{broker.bootstrap}"
    finally:
        with tidelog.open(f"kafka://{broker.bootstrap}") as admin:
            _drop_topics(admin)
