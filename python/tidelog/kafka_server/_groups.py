"""FindCoordinator: this node coordinates every group and transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidelog.kafka_server._server import Broker, Handler

__all__ = ["HANDLERS"]


async def _find_coordinator(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    return {
        "throttle_time": 0,
        "error_code": 0,
        "error_message": None,
        "node_id": broker.node_id,
        "host": broker.host,
        "port": broker.port,
    }


HANDLERS: dict[int, tuple[int, int, Handler]] = {
    10: (0, 3, _find_coordinator),
}
