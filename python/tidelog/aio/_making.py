"""What an async store's member constructors return: ``await`` it, or ``async with`` it.

On Kafka, making a member waits for the cluster (a metadata look-up, a share group's
configuration, a named producer's ``init_transactions``), so the constructors are awaited,
on both backends: ``producer = await store.producer()``, or ``async with store.producer()
as producer`` (which closes it at the end), as :func:`tidelog.aio.open` is used.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from types import TracebackType
from typing import Any, Protocol, TypeVar

__all__ = ["Making"]


class _Member(Protocol):
    async def close(self) -> None: ...


M = TypeVar("M", bound=_Member)


class Making(Coroutine[Any, Any, M]):
    """A member being made: ``await`` it once for the member, or use it with ``async with``.

    It is a coroutine (``asyncio.create_task`` and ``gather`` take it), awaited once; one
    never awaited makes no member (and Python warns that it was never awaited).
    """

    __slots__ = ("_making", "_member")

    def __init__(self, making: Coroutine[Any, Any, M]) -> None:
        self._making = making
        self._member: M | None = None

    def __await__(self) -> Generator[Any, None, M]:
        return self._making.__await__()

    def send(self, value: Any) -> Any:
        """Steps the making, as a coroutine's ``send`` (an event loop calls it)."""
        return self._making.send(value)

    def throw(self, *args: Any) -> Any:
        """Raises an exception in the making, as a coroutine's ``throw``."""
        return self._making.throw(*args)

    def close(self) -> None:
        """Stops the making, as a coroutine's ``close``."""
        self._making.close()

    async def __aenter__(self) -> M:
        self._member = await self._making
        return self._member

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._member is not None:
            await self._member.close()

    def __getattr__(self, name: str) -> Any:
        # Only for names it lacks: a member's call on the unawaited constructor says why.
        raise AttributeError(
            f"{type(self).__name__!r} object has no attribute {name!r}: it is made by "
            "awaiting it (member = await store.consumer(...), store = await "
            "tidelog.aio.open(...)) or in `async with`"
        )
