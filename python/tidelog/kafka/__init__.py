"""The tidelog API on an Apache Kafka cluster: ``tidelog.open("kafka://host:port")``.

The same store, topic, producer, consumer, transaction and work-queue calls as a local
store, through confluent-kafka (librdkafka; ``pip install tidelog[kafka]``). What Kafka
cannot do the same way raises a clear :class:`tidelog.TidelogError`; README.md lists every
difference.
"""

from __future__ import annotations

try:
    import confluent_kafka  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the installation
    from tidelog._core import InvalidConfigError

    raise InvalidConfigError(
        "kafka:// stores need confluent-kafka: pip install 'tidelog[kafka]'"
    ) from e

from tidelog.kafka.messages import KafkaMessage, KafkaRecordBatch
from tidelog.kafka.store import KafkaStore, KafkaTopic, open_kafka, parse_url

__all__ = [
    "KafkaMessage",
    "KafkaRecordBatch",
    "KafkaStore",
    "KafkaTopic",
    "open_kafka",
    "parse_url",
]
