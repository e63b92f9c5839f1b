"""Kafka clients into a local store: the Kafka wire protocol, served from a tidelog store.

``store.serve_kafka("127.0.0.1:9092")`` (or ``tidelog serve DIR --kafka 127.0.0.1:9092``)
lets unmodified Kafka clients create topics, produce (acks 0/1/all, idempotent,
transactional), fetch (long polls woken by the store; ``read_committed``), list offsets and
join consumer groups on the store, side by side with Python processes that open the same
directory: they see the same messages at the same offsets, and share groups and offsets.

Policy lives here, in Python (one module per API family); the record batches are converted
and checked in the core (``tidelog_core::kafka_records``). Message encodings come from
``kio``, generated from Kafka's own message schemas.
"""

from __future__ import annotations

from tidelog.kafka_server._server import MAX_REQUEST_BYTES, KafkaServer

__all__ = ["MAX_REQUEST_BYTES", "KafkaServer"]
