"""The Java console producer and consumer (Apache Kafka's own client) against `serve_kafka()`.

The broker's jars come from benches/kafka/broker.py's cache (Maven Central, as for the
conformance suite); the console tools' jar (org.apache.kafka:kafka-tools) is fetched next to
them with mvn on first use. Skipped, saying why, without Java or mvn.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import tidelog
from tidelog.kafka_server import KafkaServer

from benches.kafka.broker import KAFKA_VERSION, BrokerUnavailable, fetch, kafka_home


def _classpath() -> str:
    try:
        libs = fetch()
    except BrokerUnavailable as e:
        pytest.skip(f"no Kafka jars: {e}")
    tools = kafka_home() / "tools"
    if not any(tools.glob("kafka-tools-*.jar")):
        if shutil.which("mvn") is None:
            pytest.skip("mvn not found (it fetches the console tools)")
        out = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "dependency:copy",
                f"-Dartifact=org.apache.kafka:kafka-tools:{KAFKA_VERSION}",
                f"-DoutputDirectory={tools}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if out.returncode != 0:
            pytest.skip(f"fetching kafka-tools failed: {out.stdout}{out.stderr}")
    return f"{libs}/*:{tools}/*"


def _java(classpath: str, main: str, *args: str, stdin: bytes = b"") -> str:
    out = subprocess.run(
        ["java", "-cp", classpath, main, *args],
        input=stdin,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    return out.stdout.decode()


def test_console_producer_and_consumer(store: tidelog.Store, server: KafkaServer) -> None:
    classpath = _classpath()
    topic = store.create_topic("console", 1)
    _java(
        classpath,
        "org.apache.kafka.tools.ConsoleProducer",
        "--bootstrap-server",
        server.address,
        "--topic",
        "console",
        stdin=b"one\ntwo\nthree\n",
    )
    assert [m.value for m in topic.read(0)] == [b"one", b"two", b"three"]
    topic.append(b"from python", partition=0)
    printed = _java(
        classpath,
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        "--bootstrap-server",
        server.address,
        "--topic",
        "console",
        "--from-beginning",
        "--max-messages",
        "4",
        "--group",
        "java",
    )
    assert printed.split() == ["one", "two", "three", "from", "python"]
