"""ApiVersions, Metadata, CreateTopics and DeleteTopics: this one node is the whole cluster.

Every partition's leader is this node and its only replica. Topics are the store's public
topics (internal ``__`` topics are not shown). A Metadata request that names a topic the
store lacks creates it with one partition when ``auto_create_topics`` is on and the client
allows it (Kafka's ``auto.create.topics.enable``, on by default).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from tidelog import _core
from tidelog.kafka_server import _errors

if TYPE_CHECKING:
    from tidelog.kafka_server._broker import Broker, Handler

__all__ = ["HANDLERS", "api_versions_data"]

#: Kafka topic configs accepted by CreateTopics, as store settings.
_CONFIGS = {
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "segment.bytes": "segment_bytes",
    "max.message.bytes": "max_message_bytes",
    "cleanup.policy": "cleanup_policy",
    "delete.retention.ms": "delete_retention_ms",
    "compression.type": "compression",
}


def api_versions_data(versions: dict[int, tuple[int, int]]) -> dict[str, Any]:
    """The ApiVersions answer: exactly the versions this server decodes and answers."""
    keys = [
        {"api_key": key, "min_version": low, "max_version": high}
        for key, (low, high) in sorted(versions.items())
    ]
    return {"error_code": 0, "api_keys": keys, "throttle_time": 0}


async def _api_versions(broker: Broker, _request: Any, _version: int) -> dict[str, Any]:
    return api_versions_data(broker.api_versions)


def _topic_metadata(broker: Broker, name: str) -> dict[str, Any]:
    try:
        topic = broker.topic(name)
    except _core.TopicNotFoundError:
        return {"error_code": _errors.UNKNOWN_TOPIC_OR_PARTITION, "name": name, "partitions": []}
    except _core.InvalidConfigError:
        return {"error_code": _errors.INVALID_TOPIC_EXCEPTION, "name": name, "partitions": []}
    node = broker.node_id
    partitions = [
        {
            "error_code": 0,
            "partition_index": p,
            "leader_id": node,
            "leader_epoch": 0,
            "replica_nodes": [node],
            "isr_nodes": [node],
            "offline_replicas": [],
        }
        for p in range(topic.partitions)
    ]
    return {
        "error_code": 0,
        "name": name,
        "is_internal": False,
        "partitions": partitions,
        # Kafka's "not requested" (v8+): this server has no ACLs to report.
        "topic_authorized_operations": -2147483648,
    }


async def _metadata(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    if request.topics is None:
        names = broker.store.topics()
    else:
        names = [t.name for t in request.topics if t.name is not None]
        allowed = getattr(request, "allow_auto_topic_creation", True)
        if broker.auto_create_topics and allowed:
            existing = set(broker.store.topics(internal=True))
            for name in names:
                if name not in existing and not name.startswith(_core.INTERNAL_PREFIX):
                    # A failure is answered as the error the topic's metadata shows.
                    with contextlib.suppress(_core.TidelogError):
                        broker.store.native.create_topic(name, 1, exist_ok=True)
    return {
        "throttle_time": 0,
        "brokers": [{"node_id": broker.node_id, "host": broker.host, "port": broker.port}],
        "cluster_id": broker.cluster_id,
        "controller_id": broker.node_id,
        "topics": [_topic_metadata(broker, name) for name in names],
        "cluster_authorized_operations": -2147483648,
    }


def _settings(configs: Any) -> dict[str, int | str | None]:
    settings: dict[str, int | str | None] = {}
    for config in configs or ():
        setting = _CONFIGS.get(config.name)
        if setting is None:
            raise _core.InvalidConfigError(f"topic config {config.name!r} is not supported")
        value: Any = config.value
        if value is not None and setting not in ("cleanup_policy", "compression"):
            value = int(value)
            if setting.startswith("retention") and value < 0:
                value = None  # Kafka's -1: no limit
        settings[setting] = value
    return settings


async def _create_topics(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    results = []
    for t in request.topics:
        result: dict[str, Any] = {"name": t.name, "error_code": 0, "error_message": None}
        partitions = t.num_partitions if t.num_partitions > 0 else 1
        try:
            if t.num_partitions == 0 or t.num_partitions < -1:
                raise ValueError(f"{t.num_partitions} partitions")
            if t.assignments:
                raise _core.InvalidConfigError("manual replica assignments are not supported")
            settings = _settings(t.configs)
            if getattr(request, "validate_only", False):
                if t.name in broker.store.topics(internal=True):
                    raise _core.TopicExistsError(f"topic {t.name!r} already exists")
            else:
                broker.store.native.create_topic(t.name, partitions, settings=settings)
            result |= {"num_partitions": partitions, "replication_factor": 1}
        except ValueError as e:
            result |= {"error_code": _errors.INVALID_PARTITIONS, "error_message": str(e)}
        except _core.TidelogError as e:
            code = _errors.code_for(e, invalid=_errors.INVALID_CONFIG)
            if isinstance(e, _core.InvalidConfigError) and "name" in str(e):
                code = _errors.INVALID_TOPIC_EXCEPTION
            result |= {"error_code": code, "error_message": str(e)}
        results.append(result)
    return {"throttle_time": 0, "topics": results}


async def _delete_topics(broker: Broker, request: Any, version: int) -> dict[str, Any]:
    names = [t.name for t in request.topics] if version >= 6 else list(request.topic_names)
    results = []
    for name in names:
        result: dict[str, Any] = {"name": name, "error_code": 0, "error_message": None}
        try:
            if name is None:
                raise _core.TopicNotFoundError("topics are deleted by name here, not by id")
            broker.store.delete_topic(name)
        except _core.TidelogError as e:
            result |= {"error_code": _errors.code_for(e), "error_message": str(e)}
        results.append(result)
    return {"throttle_time": 0, "responses": results}


HANDLERS: dict[int, tuple[int, int, Handler]] = {
    18: (0, 4, _api_versions),
    # v9+ is flexible: clients' unknown tagged fields are skipped (_codec._read_tolerant).
    # Topic ids (v10+) are not kept: answered as the zero id, which clients read as none.
    3: (1, 13, _metadata),
    19: (2, 7, _create_topics),
    20: (1, 6, _delete_topics),
}
