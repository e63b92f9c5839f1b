"""``async with`` for the async classes whose ``close()`` is a coroutine."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class AsyncClosing:
    """Entering gives the object itself; leaving awaits its ``close()``, also on an error."""

    __slots__ = ()

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
