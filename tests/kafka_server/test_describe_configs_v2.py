"""DescribeConfigs on `serve_kafka()`: a topic's settings under Kafka's names."""

from __future__ import annotations

import pytest
import tidelog
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.cimpl import NewTopic
from tidelog.kafka_server import KafkaServer

_PATIENCE = 30.0


def test_a_topic_created_with_configs_describes_them(
    store: tidelog.Store, server: KafkaServer
) -> None:
    admin = AdminClient({"bootstrap.servers": server.address})
    configs = {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "5000000"}
    admin.create_topics([NewTopic("changes", 2, config=configs)])["changes"].result(_PATIENCE)
    store.create_topic("plain", 1)
    found = admin.describe_configs(
        [ConfigResource("topic", "changes"), ConfigResource("topic", "plain")]
    )
    described = {
        r.name: {c.name: c.value for c in f.result(_PATIENCE).values()} for r, f in found.items()
    }
    assert described["changes"]["cleanup.policy"] == "compact"
    assert described["changes"]["retention.ms"] == "-1"  # kept forever
    assert described["changes"]["retention.bytes"] == "5000000"
    # Every config is there for a topic that set none (its values are the store's).
    assert set(described["plain"]) == set(described["changes"])
    assert described["plain"]["cleanup.policy"] == "delete"
    assert (
        int(described["plain"]["max.message.bytes"])
        == store.topic("plain").config["max_message_bytes"]
    )


def test_an_unknown_topic_is_an_error(store: tidelog.Store, server: KafkaServer) -> None:
    admin = AdminClient({"bootstrap.servers": server.address})
    found = admin.describe_configs([ConfigResource("topic", "missing")])
    with pytest.raises(KafkaException) as raised:
        next(iter(found.values())).result(_PATIENCE)
    assert "UNKNOWN_TOPIC" in raised.value.args[0].name()
