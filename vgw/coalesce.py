"""Coalescing bursts of changes into one computation (level-triggered consumers).

A rack failing flips a thousand health entries within a few milliseconds; a consumer that recomputes
its whole view per change pays changes x size. Instead, a change only sets a "dirty" event, and the
consumer, once woken, waits for the burst to settle -- no new change for ``quiet_s`` -- but never
longer than ``max_s`` after the first, then computes once from the latest state.
"""

from __future__ import annotations

import asyncio
import time


async def settle(dirty: asyncio.Event, *, quiet_s: float, max_s: float) -> None:
    """Return once ``dirty`` stayed clear for ``quiet_s`` or ``max_s`` passed; leaves it clear.

    Call after ``dirty`` fired; the caller then computes from the latest state. A change that lands
    after the return sets ``dirty`` again and is picked up by the next round.
    """
    deadline = time.monotonic() + max_s
    while True:
        dirty.clear()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            await asyncio.wait_for(dirty.wait(), min(quiet_s, left))
        except TimeoutError:
            return
