"""One timer for every playout: a heap of (due time, player), pumped by the event loop.

Thousands of viewers served from the cache would mean thousands of timers, each re-armed for
every batch of packets. Instead every playout lives in one heap keyed by when it next wants to
run; one ``call_at`` handle is armed for the earliest, and each run pumps everything due.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any

from loguru import logger

from mediacache.sansio.commands import Pumped

TOLERANCE = 0.001


class PlayoutScheduler:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[tuple[float, int, Pumped]] = []
        self._version: dict[Pumped, int] = {}
        self._versions = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        self.late: list[float] = []  # kept small: for benchmarks (seconds behind schedule)

    def __len__(self) -> int:
        return len(self._version)

    def start(self, player: Pumped) -> None:
        """(Re)start ``player`` now; an older schedule of it is dropped."""
        version = next(self._versions)
        self._version[player] = version
        heapq.heappush(self._heap, (self.loop.time(), version, player))
        self._arm()

    def stop(self, player: Pumped) -> None:
        self._version.pop(player, None)  # its heap entries are skipped when they come up

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._heap.clear()
        self._version.clear()

    def _arm(self) -> None:
        if not self._heap:
            return
        due = self._heap[0][0]
        if self._handle is not None and self._armed_at <= due:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = due
        self._handle = self.loop.call_at(due, self._run)

    def _run(self) -> None:
        self._handle = None
        self._armed_at = float("inf")
        now = self.loop.time()
        heap = self._heap
        versions = self._version
        again = []  # each player runs at most once per run: no spinning on a past due time
        while heap and heap[0][0] <= now + TOLERANCE:
            _, version, player = heapq.heappop(heap)
            if versions.get(player) != version:
                continue
            try:
                wake: Any = player.pump(now)
            except Exception:
                logger.exception("a playout failed; it is stopped")
                wake = None
            if wake is None:
                versions.pop(player, None)
            else:
                again.append((max(wake, now + TOLERANCE), version, player))
        for entry in again:
            heapq.heappush(heap, entry)
        self._arm()
