"""Several Triton requests for one caller's request: cut into pieces, a bounded number in flight (the gateway's and
the clients' large embeddings requests)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
Item = TypeVar("Item")


def chunked(items: list[Item], size: int) -> list[list[Item]]:
    """``items`` cut into consecutive pieces of ``size`` (the last shorter): one request each."""
    return [items[start : start + size] for start in range(0, len(items), size)]


async def gather_bounded(calls: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """The results of ``calls`` in their order, at most ``limit`` running at a time.

    The first failure cancels the calls still running or waiting and is raised; a caller cancelled meanwhile cancels
    them all. Every task is awaited before returning, so none outlives the call or leaves an unretrieved error."""
    if limit < 1:
        raise ValueError(f"limit={limit} must be >= 1")
    if len(calls) == 1:
        return [await calls[0]()]
    gate = asyncio.Semaphore(limit)

    async def bounded(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    tasks = [asyncio.ensure_future(bounded(call)) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
