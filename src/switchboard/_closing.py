"""A base for objects that a ``with`` block closes.

Usage::

    class Store(ClosesOnExit):
        def close(self) -> None: ...

    with Store() as store: ...   # store.close() runs on the way out, whatever happened
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["ClosesOnExit"]


class ClosesOnExit:
    """``__enter__`` gives the object itself, ``__exit__`` calls its ``close()``."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
