"""The buffered producer on Kafka: librdkafka's queue with tidelog's backpressure.

``send`` enqueues into librdkafka's local queue (``queue.buffering.max.messages`` =
``buffer_messages``). Delivery reports are served by the sending thread while it sends
(every ``SERVE_EVERY`` sends) and by a background thread while it does not, so ``stats()``
counts what the broker acknowledged; user delivery callbacks run on the thread serving.
Backpressure works on the messages not yet acknowledged, with the same watermarks as a local
producer. A named producer is also a transactional one (``transactional.id`` = ``name``):
opening it fences older instances of the name, as a local named producer does.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from tidelog import _core
from tidelog.kafka._common import TIMEOUT, StoreLink, headers_list
from tidelog.kafka._errors import PURGE_INFLIGHT, PURGE_QUEUE, error_for, translated
from tidelog.kafka.lag import LagGuard

__all__ = ["KafkaProducer"]

_ON_FULL = ("block", "raise", "shed")

#: ``buffer_messages`` by default; the local backend's is 65,536. Sends wait from 0.8 of it
#: (100,000 messages in flight: librdkafka's own ``queue.buffering.max.messages``, the most a
#: plain confluent-kafka producer holds by default) until 0.5 (62,500: more than librdkafka
#: keeps on the wire, 5 requests in flight of up to 10,000 messages each, so its queue does
#: not run dry while a send waits). With 65,536 sends waited from 52,428 until 32,768 and
#: batches left short: 1,750-2,200 messages per produce request against 3,200-3,600 now and
#: 4,500-6,100 for plain confluent-kafka (200,000 sends of 100 B); the bench's paired ratio
#: to plain confluent-kafka went from 0.90 to 0.99 (median of 4 runs; by CPU, 0.90 to 0.92).
BUFFER_MESSAGES = 125_000


#: A send serves the delivery reports waiting (``poll(0)``) every this many sends, on its own
#: thread: librdkafka then frees each report's message on the thread that allocated it, and
#: the GIL is not passed between two threads per report, as when only the background thread
#: served them (confluent-kafka's delivery callback takes the GIL for every report, also with
#: ``delivery.report.only.error``). It holds at most about this many reports more than
#: served at once, against the 100,000 messages in flight of the high watermark.
SERVE_EVERY = 4096
#: Longest wait of the background thread in one ``poll``; also how long it stays away after
#: a sending thread served reports.
_IDLE_POLL = 0.05

_Report = Callable[[KafkaError | None, Any], None]


class _Serving(threading.local):
    """Whether this thread is inside a call of the producer that serves delivery reports.

    Their callbacks may run user code, and confluent-kafka's ``poll`` and ``flush`` cannot
    nest on one thread (the inner call clears the thread's state the outer one's next
    callback needs); a flush inside a callback would also wait for the report being served.
    """

    inside = False


def _failures_to(method: weakref.WeakMethod[_Report]) -> _Report:
    """The librdkafka producer's delivery callback: failures go to ``method``, held weakly.

    With the bound method itself, the KafkaProducer and its librdkafka producer held each
    other, and a closed producer kept its handle (three threads, its buffers) until the
    cyclic GC ran: five rounds of send + close left 15 threads more.
    """

    def failed(err: KafkaError | None, msg: Any) -> None:
        if err is not None and (report := method()) is not None:
            report(err, msg)

    return failed


class KafkaProducer(_core.KafkaSender):
    """A producer of a :class:`~tidelog.kafka.store.KafkaStore` (see ``store.producer``).

    Args:
        store: The store.
        name: Becomes the ``transactional.id``: opening fences older instances, and
            :meth:`KafkaStore.transaction` works with it.
        idempotent: ``enable.idempotence`` (the default, as locally).
        buffer_messages: Most messages sent and not yet acknowledged by Kafka. The default,
            125,000, puts the high watermark at 100,000 (librdkafka's own
            ``queue.buffering.max.messages``) and the low one at 62,500 (see
            ``BUFFER_MESSAGES``).
        high_watermark: Occupancy fraction at which backpressure starts.
        low_watermark: Occupancy fraction at which it ends.
        on_full: ``"block"``, ``"raise"`` or ``"shed"``. Kafka cannot take back a message
            already queued, so ``"shed"`` drops the message being sent (``send`` returns
            False, counted under its priority), not the lowest-priority buffered one.
        block_timeout: Longest wait of a blocked ``send`` (None: no limit).
        max_batch_messages: ``batch.num.messages``. None (the default) leaves librdkafka's
            own (10,000; ``batch.size``, 1 MB, bounds a batch too): the local backend's
            4096 made 4-6% fewer msgs/s on Kafka (200,000 sends of 100 B, interleaved
            rounds), and plain confluent-kafka clients use librdkafka's.
        linger_ms: ``linger.ms``.
        max_lag: Also apply pressure (as ``on_full`` says) while the slowest consumer group
            of a topic this producer writes to is ``max_lag`` messages behind in a
            partition, until a check finds it at or below ``max_lag * low_watermark``.
            Measured through the admin client on credit: no partition gets more than
            ``max_lag`` messages past the slowest group's committed offset (see
            :mod:`tidelog.kafka.lag`).
        compression: ``compression.type`` of this producer's batches.
        **config: Further librdkafka producer options.
    """

    def __init__(
        self,
        store: StoreLink,
        *,
        name: str | None = None,
        idempotent: bool = True,
        buffer_messages: int = BUFFER_MESSAGES,
        high_watermark: float = 0.8,
        low_watermark: float = 0.5,
        on_full: str = "block",
        block_timeout: float | None = None,
        max_batch_messages: int | None = None,
        linger_ms: float = 1.0,
        max_lag: int | None = None,
        compression: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if on_full not in _ON_FULL:
            raise _core.InvalidConfigError(f"on_full must be one of {_ON_FULL}, got {on_full!r}")
        if not 0.0 < low_watermark <= high_watermark <= 1.0:
            raise _core.InvalidConfigError(
                "watermarks must satisfy 0 < low_watermark <= high_watermark <= 1, got "
                f"{low_watermark}, {high_watermark}"
            )
        if isinstance(buffer_messages, bool) or not isinstance(buffer_messages, int):
            raise TypeError(f"buffer_messages must be int, got {type(buffer_messages).__name__}")
        if buffer_messages < 1:
            raise _core.InvalidConfigError(f"buffer_messages must be >= 1, got {buffer_messages}")
        if max_lag is not None:
            if isinstance(max_lag, bool) or not isinstance(max_lag, int):
                raise TypeError(f"max_lag must be int, got {type(max_lag).__name__}")
            if not 1 <= max_lag < 2**63:
                raise _core.InvalidConfigError(
                    f"max_lag must be a positive int below 2**63, got {max_lag!r}"
                )
        if name is not None and not idempotent:
            raise _core.InvalidConfigError("a named (transactional) producer must be idempotent")
        self._store = store
        self._lag = None if max_lag is None else LagGuard(store, max_lag, low_watermark)
        self._name = name
        self._idempotent = idempotent
        self._capacity = buffer_messages
        self._high = max(1, int(buffer_messages * high_watermark))
        self._low = int(buffer_messages * low_watermark)
        self._on_full = on_full
        self._block_timeout = block_timeout
        settings: dict[str, Any] = {
            "enable.idempotence": idempotent,
            "partitioner": "murmur2_random",
            "linger.ms": linger_ms,
            # librdkafka's own bound stays above ours, so its BufferError cannot happen first.
            "queue.buffering.max.messages": buffer_messages + 1,
            # A Python callback per message would cost more than the rest of send():
            # librdkafka reports failures only, and len(producer) counts what is in flight.
            "delivery.report.only.error": True,
            "on_delivery": _failures_to(weakref.WeakMethod(self._failed)),
            **(config or {}),
        }
        if max_batch_messages is not None:
            settings.setdefault("batch.num.messages", max_batch_messages)
        if compression is not None:
            settings["compression.type"] = compression
        if name is not None:
            settings["transactional.id"] = name
        self._producer = Producer(store.client_config(**settings))
        self._lock = threading.Lock()
        # The common send is one ticket, one comparison and produce(), in the native base
        # (_core.KafkaSender); from ticket `_check_at` on it takes the full path,
        # _send_full (checks, backpressure, max_lag), as sends with headers or a callback
        # do. len(producer) takes librdkafka's locks (~135 ns), so the full path asks it only
        # once the sends since it last asked could have reached the high watermark: only
        # sends add to it (each takes a ticket, atomically, so threads cannot share one),
        # deliveries take away, so until ticket `_check_at` it stays below `_high` (up to one
        # message per concurrent send may be in flight unseen, as with a check per send).
        # Whatever else needs the full path (closed, a pending error, pressure, a named
        # producer outside a transaction, max_lag) sets `_check_at` to 0 once it holds, and
        # `_arm` reads those conditions after it raised `_check_at`: in any interleaving of
        # threads, either the arming thread sees the condition or its 0 comes last.
        self._use_produce(self._producer.produce, SERVE_EVERY)
        self._check_at = 0
        # Tickets that sent nothing (refused, shed, failed, taken by stats()): sent = tickets
        # issued - unsent, which no send pays for.
        self._unsent = 0
        self._failed_count = 0
        self._dropped: Counter[int] = Counter()
        self._hits = 0
        self._blocked = 0.0
        self._pressure = False
        self._lag_pressured: set[str] = set()
        self._error: BaseException | None = None
        self._closed = False
        self._in_transaction = False
        self._stop = threading.Event()
        self._serving = _Serving()
        # Serves by sending threads (_serve_sending, _wait_below): while it moves, the
        # background thread stays out of librdkafka's queue.
        self._served = 0
        if name is not None:
            with translated(f"opening transactional producer {name!r}"):
                self._producer.init_transactions(TIMEOUT)
        # The thread gets this producer in a list it empties (see _serve_in_background), not
        # as a bound method: Thread.run drops its target and arguments last, and must not
        # be what frees this producer.
        self._poller = threading.Thread(
            target=self._serve_in_background,  # a static method: not bound to this producer
            args=([self],),
            name="tidelog-kafka-producer",
            daemon=True,
        )
        self._poller.start()

    # -- properties --------------------------------------------------------------------------

    @property
    def name(self) -> str | None:
        """The name (``transactional.id``), or None."""
        return self._name

    @property
    def idempotent(self) -> bool:
        """Whether ``enable.idempotence`` is on."""
        return self._idempotent

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._closed

    @property
    def in_transaction(self) -> bool:
        """True while a transaction is open."""
        return self._in_transaction

    @property
    def native(self) -> Producer:
        """The confluent-kafka producer underneath."""
        return self._producer

    # -- delivery reports --------------------------------------------------------------------

    @staticmethod
    def _serve_in_background(taken: list[KafkaProducer]) -> None:
        """The delivery-report thread: ``_serve`` for the one producer in ``taken``.

        Where the last reference to a producer goes, its librdkafka handle may be freed,
        which lets go of the GIL (rd_kafka_destroy joins librdkafka's threads). A thread
        that takes the GIL back while the interpreter finalizes is ended by a forced
        unwind, and one that passes a native frame (the native base's dealloc, freeing its
        reference to the handle) aborts the process. So this thread drops the producer
        while it still holds the handle itself, and lets the handle go last, in no native
        frame: it may end there, but the process does not abort. (Thread.run drops its
        target and arguments after the call: a bound method, or the producer itself among
        the arguments, would be dropped there, last.)
        """
        self = taken.pop()  # the producer: a static method, so that the thread holds none
        handle = self.native
        try:
            self._serve()
        finally:
            del self
            del handle

    def _serve(self) -> None:
        """The background thread's loop: serves reports while no sending thread does."""
        seen = self._served
        while not self._stop.is_set():
            if self._served != seen:
                # A sending thread served within the last wait: it is sending, and serves
                # the reports itself. Two threads serving would pass the GIL per report.
                seen = self._served
                self._stop.wait(_IDLE_POLL)
                continue
            if not self._poll(self._producer.poll, _IDLE_POLL):
                self._stop.wait(_IDLE_POLL)

    def _serve_sending(self) -> None:
        """Serves the reports waiting, on the sending thread (every ``SERVE_EVERY`` sends).

        The native ``send`` calls it. Not inside a delivery callback: the serve running it
        goes on after it.
        """
        if not self._serving.inside:
            self._served += 1
            self._poll(self._producer.poll, 0)

    @contextmanager
    def _reports_served_here(self) -> Iterator[None]:
        """Marks this thread as serving delivery reports (see ``_Serving``) for the block.

        Raises:
            TidelogError: Already inside a delivery callback of this producer.
        """
        serving = self._serving
        if serving.inside:
            raise _core.TidelogError(
                "inside a delivery callback: waiting for deliveries (flush, close, a send "
                "blocked under pressure, a transaction's commit or abort) would wait for "
                "the report being served"
            )
        serving.inside = True
        try:
            yield
        finally:
            serving.inside = False

    def _poll(self, serve: Callable[[float], Any], timeout: float) -> bool:
        """Serves reports on this thread: ``serve(timeout)``, librdkafka's poll or flush.

        Returns False if it raised a Kafka error, kept as the next error.

        Raises:
            TidelogError: Called inside a delivery callback (see ``_Serving``).
        """
        with self._reports_served_here():
            try:
                serve(timeout)
            except KafkaException as e:
                # A fatal error (fenced, say) surfaces here too: the next call raises it.
                err = e.args[0] if e.args else None
                if isinstance(err, KafkaError):
                    self._pend(error_for(err, "producer"))
                return False
        return True

    def _pend(self, error: BaseException) -> None:
        """Keeps ``error`` for the next ``send`` or ``flush`` to raise (the first one kept)."""
        with self._lock:
            if self._error is None:
                self._error = error
                self._check_at = 0  # the next send raises it

    def _failed(self, err: KafkaError | None, _msg: Any) -> None:
        if err is None:
            return
        with self._lock:
            self._failed_count += 1
            # Purged by abort_transaction: expected, and not this producer's next error.
            if err.code() in (PURGE_QUEUE, PURGE_INFLIGHT):
                return
            if self._error is None:
                self._error = error_for(err, "delivering a message")
                self._check_at = 0  # the next send raises it

    def _raise_error(self) -> None:
        if self._error is not None:
            with self._lock:
                err, self._error = self._error, None
            if err is not None:
                raise err

    def _wait_below(self, level: int, timeout: float | None) -> bool:
        """Waits until at most ``level`` messages are in flight; False on timeout."""
        producer = self._producer
        end = None if timeout is None else time.monotonic() + timeout
        # flush() serves delivery reports while it waits, but also makes librdkafka send
        # at once, without linger.ms: right for flush(), not under backpressure, where it
        # cut the batches short (bench, 200,000 sends + flush: 289 ms of CPU, all threads,
        # against 201 ms for plain confluent-kafka; 245 against 225 with poll(), which
        # serves the reports only).
        wait = producer.flush if level == 0 else producer.poll
        while len(producer) > level:
            if end is not None and time.monotonic() >= end:
                return False
            self._served += 1
            if not self._poll(wait, 0.005):
                self._raise_error()
        return True

    def would_block(self) -> bool:
        """Whether :meth:`send` would wait for room now (``on_full="block"``, under pressure).

        For :mod:`tidelog.aio`, which waits in a worker thread (:meth:`wait_for_room`) and
        then sends without blocking the loop.
        """
        return self._on_full == "block" and (self._pressure or len(self._producer) >= self._high)

    def wait_for_room(self, timeout: float | None) -> bool:
        """Waits until pressure ends (``low_watermark``); False after ``timeout`` seconds.

        Counted in ``blocked_seconds`` as a blocked :meth:`send` is.
        """
        if not self.would_block():
            return True
        if not self._pressure:
            self._pressure = True
            self._check_at = 0
            self._hits += 1
        began = time.monotonic()
        ok = self._wait_below(self._low, timeout)
        self._blocked += time.monotonic() - began
        if ok:
            self._pressure = False
        return ok

    # -- sending -----------------------------------------------------------------------------

    # send() is the native base's: the common path there, the rest here.

    def _send_full(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None,
        partition: int | None,
        priority: int | None,
        on_delivery: Callable[[KafkaError | None, Any], None] | None,
        ticket: int,
    ) -> bool:
        """:meth:`send` from ticket ``_check_at`` on, or with headers or a callback."""
        if priority is None:
            priority = 0
        try:
            if ticket >= self._check_at and not self._admit(topic, priority, ticket):
                self._not_sent()
                return False
        except BaseException:
            self._not_sent()
            raise
        try:
            if headers is None and on_delivery is None:
                self._producer.produce(topic, value, key, -1 if partition is None else partition)
            else:
                self._produce_with(topic, value, key, headers, partition, on_delivery)
        except BaseException as e:
            raise self._refused(e, topic)  # noqa: B904 (it sets the cause)
        return True

    def _admit(self, topic: str, priority: int, ticket: int) -> bool:
        """The full path of :meth:`send` before ``produce``; False: shed the message.

        Raises:
            StoreClosedError, InvalidConfigError, BackpressureError, TypeError, or the
            pending error.
        """
        if self._closed:
            raise _core.StoreClosedError("the producer is closed")
        if not isinstance(topic, str):
            raise TypeError(f"topic must be str, got {type(topic).__name__}")
        if self._name is not None and not self._in_transaction:
            raise _core.InvalidConfigError(
                f"producer {self._name!r} is transactional on Kafka (its name is the "
                "transactional.id): send inside store.transaction(...), or use an unnamed "
                "producer"
            )
        # Not into a delivery callback: one that let it out would make it pending again,
        # for the next callback's send, and so on, while the sending code never saw it.
        if self._error is not None and not self._serving.inside:
            self._raise_error()
        producer = self._producer
        pressed = self._pressure
        if not pressed:
            in_flight = len(producer)
            if in_flight < self._high:
                self._arm(ticket + self._high - in_flight)
            else:
                pressed = self._pressure = True
                self._check_at = 0
                self._hits += 1
        if pressed:
            if self._on_full == "raise" and len(producer) > self._low:
                raise _core.BackpressureError(
                    f"{len(producer)} messages are not yet acknowledged by Kafka "
                    f"(high watermark {self._high})"
                )
            if self._on_full == "shed" and len(producer) > self._low:
                self._dropped[priority] += 1
                return False
            began = time.monotonic()
            ok = self._wait_below(self._low, self._block_timeout)
            self._blocked += time.monotonic() - began
            if not ok:
                raise _core.BackpressureError(
                    f"send blocked for {self._block_timeout} s under backpressure"
                )
            self._pressure = False
            self._raise_error()
        if self._lag is not None:
            if self._lag.take(topic, len(producer)):
                self._lag_pressured.discard(topic)
            elif not self._lag_pressure(topic, priority):
                return False
        return True

    def _arm(self, check_at: int) -> None:
        """Lets sends before ticket ``check_at`` take the fast path, unless one must not."""
        self._check_at = check_at
        # Read after the write above: see __init__.
        if (
            self._closed
            or self._error is not None
            or self._pressure
            or self._lag is not None
            or (self._name is not None and not self._in_transaction)
        ):
            self._check_at = 0

    def _not_sent(self) -> None:
        with self._lock:
            self._unsent += 1

    def _refused(self, e: BaseException, topic: object) -> BaseException:
        """Counts a send whose ``produce`` raised ``e``; returns what the send raises."""
        self._not_sent()
        err: BaseException
        if isinstance(e, KafkaException):
            kafka_error = e.args[0] if e.args else None
            if isinstance(kafka_error, KafkaError):
                err = error_for(kafka_error, f"sending to {topic!r}")
            else:
                err = _core.TidelogError(f"sending to {topic!r}: {e}")
        elif isinstance(e, BufferError):
            err = _core.BackpressureError(f"librdkafka's queue is full: {e}")
        elif isinstance(e, TypeError) and not isinstance(topic, str):
            # The fast path leaves the check of the topic to produce().
            err = TypeError(f"topic must be str, got {type(topic).__name__}")
        else:
            return e
        err.__cause__ = e
        return err

    def _produce_with(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None,
        partition: int | None,
        on_delivery: Callable[[KafkaError | None, Any], None] | None,
    ) -> None:
        """``produce`` with headers or a delivery callback (off the common path)."""
        extra: dict[str, Any] = {}
        if headers is not None:
            extra["headers"] = headers_list(headers)
        if on_delivery is not None:
            # A message's own callback replaces the producer's: it reports failures too.
            # What the callback raises is the producer's next error: raised out of the
            # librdkafka call serving it, it would stop that serve (the background thread's
            # for good) and come out of a send that succeeded.
            def report(err: KafkaError | None, msg: Any) -> None:
                try:
                    on_delivery(err, msg)
                except Exception as e:
                    self._pend(e)
                self._failed(err, msg)

            extra["on_delivery"] = report
        self._producer.produce(topic, value, key, -1 if partition is None else partition, **extra)

    def _lag_pressure(self, topic: str, priority: int) -> bool:
        """``max_lag`` pressure on ``topic``, as ``on_full`` says; False: shed the message.

        Raises:
            BackpressureError: ``on_full="raise"``, or a blocked send timed out.
        """
        guard = self._lag
        assert guard is not None
        if topic not in self._lag_pressured:  # an episode starts
            self._lag_pressured.add(topic)
            self._hits += 1
        lag, group = guard.last.get(topic, (0, None))
        if self._on_full == "raise":
            raise _core.BackpressureError(
                f"consumer group {group!r} is {lag} messages behind in a partition of "
                f"{topic!r} (max_lag {guard.max_lag}, counting messages in flight)"
            )
        if self._on_full == "shed":
            self._dropped[priority] += 1
            return False
        began = time.monotonic()
        end = None if self._block_timeout is None else began + self._block_timeout
        try:
            while not guard.resumed(topic, len(self._producer)):
                if end is not None and time.monotonic() >= end:
                    raise _core.BackpressureError(
                        f"send blocked for {self._block_timeout} s: a consumer group of "
                        f"{topic!r} stayed more than {guard.max_lag} messages behind"
                    )
                # Serves delivery reports meanwhile; the group needs time to commit.
                self._served += 1
                if not self._poll(self._producer.flush, 0.05):
                    self._raise_error()
        finally:
            self._blocked += time.monotonic() - began
        guard.spend(topic)  # the credit of the message that waited
        self._lag_pressured.discard(topic)
        return True

    def lag_check_needed(self, topic: str) -> bool:
        """Whether a send to ``topic`` first asks the cluster for lag (``max_lag``; I/O).

        For :mod:`tidelog.aio`, which then calls :meth:`reserve_lag_room` in a thread.
        """
        return self._lag is not None and not self._lag.has_credit(topic)

    def reserve_lag_room(self, topic: str, priority: int = 0) -> bool:
        """Does ``max_lag``'s check for one send to ``topic`` ahead of :meth:`send`.

        Waits or raises as ``on_full`` says; the credit found is left for the send, which
        then needs no I/O. Returns False if ``on_full="shed"`` dropped the message (counted).
        """
        guard = self._lag
        if guard is None:
            return True
        if guard.take(topic, len(self._producer)):
            self._lag_pressured.discard(topic)
        elif not self._lag_pressure(topic, priority):
            return False
        guard.refund(topic)
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until Kafka acknowledged every message sent so far.

        Returns:
            False if ``timeout`` passed first.

        Raises:
            TidelogError: A delivery failed (the first failure since the last raise).
        """
        ok = self._wait_below(0, timeout)
        self._raise_error()
        return ok

    def stats(self) -> dict[str, Any]:
        """Counters, as for a local producer.

        ``buffered``, ``sent``, ``written``, ``dropped`` (priority -> count),
        ``high_watermark_hits``, ``blocked_seconds``, plus ``failed`` (deliveries Kafka
        refused).
        """
        buffered = len(self._producer)
        with self._lock:
            sent = self._take_ticket() - self._unsent
            self._unsent += 1  # the ticket just taken
            return {
                "buffered": buffered,
                "sent": sent,
                "written": sent - buffered - self._failed_count,
                "failed": self._failed_count,
                "dropped": dict(self._dropped),
                "high_watermark_hits": self._hits,
                "blocked_seconds": self._blocked,
            }

    # -- transactions (used by KafkaTransaction) ---------------------------------------------

    def begin_transaction(self) -> None:
        """Begins a Kafka transaction (needs ``name``)."""
        if self._name is None:
            raise _core.InvalidConfigError(
                "transactions need a named producer: store.producer(name=...) becomes the "
                "transactional.id"
            )
        if self._on_full == "shed":
            raise _core.InvalidConfigError("a shedding producer cannot be transactional")
        if self._in_transaction:
            raise _core.InvalidConfigError("a transaction is already open on this producer")
        self.flush()
        with translated("beginning a transaction"):
            self._producer.begin_transaction()
        self._in_transaction = True

    def commit_transaction(self) -> None:
        """Commits the open transaction (waits for every message in it)."""
        # librdkafka flushes first: delivery callbacks may run here.
        with self._reports_served_here():
            try:
                with translated("committing a transaction"):
                    self._producer.commit_transaction(TIMEOUT)
            finally:
                self._in_transaction = False
                self._check_at = 0
        self.flush()

    def abort_transaction(self) -> None:
        """Aborts the open transaction."""
        with self._reports_served_here():
            try:
                with translated("aborting a transaction"):
                    self._producer.abort_transaction(TIMEOUT)
            finally:
                self._in_transaction = False
                self._check_at = 0
                with self._lock:
                    self._error = None

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Flushes and closes (aborting an open transaction); closing twice is harmless."""
        if self._closed:
            return
        if self._serving.inside:
            raise _core.TidelogError(
                "close() inside a delivery callback would wait for the report being served"
            )
        try:
            if self._in_transaction:
                self.abort_transaction()
            self.flush()
        except _core.ProducerFencedError:
            pass  # a newer instance owns the name: nothing of this one is left to finish
        finally:
            self._closed = True
            self._check_at = 0
            # The poller sees the stop when its poll(0.05) returns and exits by itself. Not
            # joined: that was a wait of up to 50 ms in every close (measured 37 ms on
            # average; 5% of a 100,000-message send + flush round), for a thread that only
            # serves delivery reports, which the flush below serves too.
            self._stop.set()
            self._poll(self._producer.flush, TIMEOUT)
            self._store.forget(self)

    def __enter__(self) -> KafkaProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
