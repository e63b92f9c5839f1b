"""The Kafka protocol server: one asyncio loop in a background thread, one task per client.

A connection reads size-prefixed request frames and answers them in order (Kafka clients
rely on it, and pipeline requests). A client that breaks the protocol (a frame larger than
``max_request_bytes``, bytes that do not decode, an API key or version not advertised) is
disconnected, as Kafka does; one that disconnects mid-request costs nothing but its task.
Handlers never raise into the connection: store errors become Kafka error codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading

from tidelog import _core
from tidelog.kafka_server import _codec, _configs, _groups, _records, _topics, _txn
from tidelog.kafka_server._broker import Broker, Handler, ServedStore

__all__ = ["KafkaServer"]

log = logging.getLogger("tidelog.kafka_server")

#: Largest request accepted (Kafka's ``socket.request.max.bytes`` default).
MAX_REQUEST_BYTES = 100 * 1024 * 1024


def _handlers() -> dict[int, tuple[int, int, Handler]]:
    table: dict[int, tuple[int, int, Handler]] = {}
    for module in (_topics, _records, _groups, _txn, _configs):
        table.update(module.HANDLERS)
    return table


class KafkaServer:
    """A running Kafka protocol server on a store; see :meth:`tidelog.Store.serve_kafka`."""

    def __init__(
        self,
        store: ServedStore,
        address: str = "127.0.0.1:9092",
        *,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        auto_create_topics: bool = True,
    ) -> None:
        """Starts serving ``store`` on ``address`` (``host:port``; port 0 picks a free one).

        Raises:
            InvalidConfigError: ``address`` is not ``host:port``.
            OSError: The address cannot be bound.
        """
        host, sep, port_text = address.rpartition(":")
        if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
            raise _core.InvalidConfigError(f"address must be host:port, got {address!r}")
        self.max_request_bytes = max_request_bytes
        #: The ``host:port`` clients connect to (the port chosen when 0 was asked for).
        self.address: str = address
        self.broker = Broker(store, auto_create_topics=auto_create_topics)
        self._table = _handlers()
        self.broker.api_versions = {k: (lo, hi) for k, (lo, hi, _h) in self._table.items()}
        self._loop = asyncio.new_event_loop()
        self._connections: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._closed = False
        started: list[BaseException | None] = []
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                # Before any client: the transactions of the run before are this run's.
                self._loop.run_until_complete(_txn.resume_open(self.broker))
                self._server = self._loop.run_until_complete(
                    asyncio.start_server(self._serve, host.strip("[]"), int(port_text))
                )
                started.append(None)
            except BaseException as e:
                started.append(e)
                ready.set()
                self._loop.close()
                return
            ready.set()
            try:
                self._loop.run_forever()
            finally:
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
                self._loop.close()

        self._thread = threading.Thread(target=run, name="tidelog-kafka-server", daemon=True)
        self._thread.start()
        ready.wait()
        if started[0] is not None:
            raise started[0]
        assert self._server is not None
        sock_host, sock_port = self._server.sockets[0].getsockname()[:2]
        self.broker.host, self.broker.port = sock_host, sock_port
        self.address = f"{sock_host}:{sock_port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closed:
            # Accepted as the server stopped: the task started after close() looked. The
            # socket closes in a later callback, which must run before the loop stops.
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        try:
            await self._connection(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away, possibly mid-request: nothing to answer
        except _codec.RequestError as e:
            log.info("closing the connection of %s: %s", peer, e)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("closing the connection of %s after an unexpected error", peer)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            if size < 8 or size > self.max_request_bytes:
                raise _codec.RequestError(
                    f"request size {size} outside 8..{self.max_request_bytes} bytes"
                )
            frame = await reader.readexactly(size)
            key, version, correlation = _codec.peek_header(frame)
            response = await self._answer(frame, key, version, correlation)
            if response is not None:
                # One write per buffer (not writelines, which joins them into a copy on
                # Python 3.11): the records of a Fetch go to the socket from the core's buffer.
                for part in response:
                    writer.write(part)
                await writer.drain()

    async def _answer(
        self, frame: bytes, key: int, version: int, correlation: int
    ) -> list[bytes | bytearray | memoryview] | None:
        entry = self._table.get(key)
        if entry is None:
            raise _codec.RequestError(f"api key {key} is not served")
        low, high, handler = entry
        if not low <= version <= high:
            if key == _codec.API_VERSIONS_KEY:
                # KIP-511: a too-new ApiVersions gets our versions in a v0 answer, so the
                # client can pick one and ask again.
                versions = _topics.api_versions_data(self.broker.api_versions)
                versions["error_code"] = 35
                return _codec.encode_response(key, 0, correlation, versions)
            raise _codec.RequestError(f"api key {key} version {version} is not served")
        request = _codec.decode_request(frame, key, version)
        log.debug("api key %d v%d", key, version)
        data = await handler(self.broker, request, version)
        if data is None:
            return None
        return _codec.encode_response(key, version, correlation, data)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Stops listening, disconnects every client and stops the server's thread.

        Idempotent. Everything a client was told is written stays in the store.
        """
        if self._closed:
            return
        self._closed = True

        async def stop() -> None:
            # Stop accepting first but close the server last: an accept already under way
            # must find the server open (Python 3.11 asserts it does, and would drop the
            # half-made transport unclosed).
            if self._server is not None:
                for sock in self._server.sockets:
                    self._loop.remove_reader(sock.fileno())
            current = asyncio.current_task()
            # Connections accepted but not yet started are tasks too: they run, see the
            # server closed and close their transport. Started ones are cancelled.
            while others := [t for t in asyncio.all_tasks() if t is not current]:
                for task in others:
                    if task in self._connections:
                        task.cancel()
                _done, stuck = await asyncio.wait(others, timeout=5)
                for task in stuck:
                    task.cancel()
            if self._server is not None:
                self._server.close()
            await asyncio.to_thread(_groups.close_groups, self.broker)
            _txn.close(self.broker)
            self.broker.close()

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def __enter__(self) -> KafkaServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving"
        return f"<KafkaServer {self.address} {state}>"
