"""DescribeConfigs: a topic's stored settings under Kafka's config names.

Admin clients read them back after creating topics (Quix Streams checks its changelog
topics' ``cleanup.policy`` and ``retention.*`` against their sources this way). The values
are the topic's effective settings (the store's defaults where the topic sets none); a
limit the store does not have (``retention.ms`` of a topic kept forever) is Kafka's ``-1``.
This node has no broker configs to show: a broker resource is answered with none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tidelog import _core
from tidelog.kafka_server import _errors

if TYPE_CHECKING:
    from tidelog.kafka_server._broker import Broker, Handler

__all__ = ["HANDLERS"]

_TOPIC, _BROKER = 2, 4
#: DescribeConfigs' config_source for a config set on the topic.
_TOPIC_CONFIG = 1

#: Kafka topic config -> the store's topic setting (those CreateTopics accepts, and more).
_NAMES = {
    "cleanup.policy": "cleanup_policy",
    "compression.type": "compression",
    "delete.retention.ms": "delete_retention_ms",
    "index.interval.bytes": "index_interval_bytes",
    "max.message.bytes": "max_message_bytes",
    "retention.bytes": "retention_bytes",
    "retention.ms": "retention_ms",
    "segment.bytes": "segment_bytes",
}


def _value(value: int | str | None) -> str:
    return "-1" if value is None else str(value)


def _topic_result(broker: Broker, resource: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "error_code": 0,
        "error_message": None,
        "resource_type": resource.resource_type,
        "resource_name": resource.resource_name,
        "configs": [],
    }
    try:
        settings = broker.topic(resource.resource_name).config
    except _core.TidelogError as e:
        return result | {"error_code": _errors.code_for(e), "error_message": str(e)}
    wanted = resource.configuration_keys
    names = sorted(_NAMES) if wanted is None or not wanted else list(wanted)
    configs: list[dict[str, Any]] = []
    for name in names:
        setting = _NAMES.get(name)
        if setting is None or setting not in settings:
            continue  # as Kafka does with a name it does not know: left out
        configs.append(
            {
                "name": name,
                "value": _value(settings[setting]),
                "read_only": False,
                "is_default": False,
                "config_source": _TOPIC_CONFIG,
                "is_sensitive": False,
                "synonyms": [],
                "config_type": 0,
                "documentation": None,
            }
        )
    return result | {"configs": configs}


async def _describe_configs(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    results = []
    for resource in request.resources:
        if resource.resource_type == _TOPIC:
            results.append(_topic_result(broker, resource))
        else:
            known = resource.resource_type == _BROKER
            results.append(
                {
                    "error_code": 0 if known else _errors.INVALID_REQUEST,
                    "error_message": None if known else "only topic and broker configs",
                    "resource_type": resource.resource_type,
                    "resource_name": resource.resource_name,
                    "configs": [],
                }
            )
    return {"throttle_time": 0, "results": results}


HANDLERS: dict[int, tuple[int, int, Handler]] = {
    32: (0, 3, _describe_configs),
}
