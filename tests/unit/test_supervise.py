"""The supervisor's rules, without a service around it: restart after a failure (counted, with a
doubling backoff reset by a long run), readiness false while a required task is down, a finished
task left alone, a task that returns when it must not treated as failed, stop bounded."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging

import pytest

from tests.support.inprocess import task_restarts
from vgw.supervise import Supervisor
from vgw.telemetry.endpoint import Health


async def until(pred: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_failed_task_restarts_and_readiness_follows(caplog: pytest.LogCaptureFixture) -> None:
    health = Health()
    health.set_started()
    sup = Supervisor("unit-a", health, backoff_initial_s=0.05, backoff_max_s=0.2)
    runs = 0
    release = asyncio.Event()

    async def job() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise ValueError(f"bad chunk {runs}")
        await release.wait()

    with caplog.at_level(logging.ERROR, logger="vgw.supervise"):
        sup.spawn("worker", job)
        await until(lambda: runs >= 2 and not sup.is_up("worker"))
        ready, report = health.readiness()
        assert not ready
        assert "worker" in report["tasks"] and "ValueError: bad chunk" in report["tasks"]
        await until(lambda: runs == 4 and sup.is_up("worker"))
    assert health.readiness()[0]
    assert sup.restarts("worker") == 3 == task_restarts("unit-a", "worker")
    failed = [r for r in caplog.records if "task worker failed" in r.getMessage()]
    assert len(failed) == 3 and all(r.exc_info for r in failed)  # the traceback is logged
    await sup.stop()
    assert not sup.is_up("worker")


async def test_backoff_doubles_to_its_bound() -> None:
    sup = Supervisor("unit-b", backoff_initial_s=0.02, backoff_max_s=0.08)
    starts: list[float] = []
    loop = asyncio.get_running_loop()

    async def job() -> None:
        starts.append(loop.time())
        raise RuntimeError("always")

    sup.spawn("flaky", job)
    await until(lambda: len(starts) >= 6)
    await sup.stop()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # 0.02, 0.04, 0.08, 0.08, 0.08: each gap at least its backoff, never below the bound once reached
    for gap, floor in zip(gaps, (0.02, 0.04, 0.08, 0.08, 0.08), strict=False):
        assert gap >= floor * 0.9, gaps


async def test_finished_task_is_not_restarted_but_forever_task_is() -> None:
    health = Health()
    health.set_started()
    sup = Supervisor("unit-c", health, backoff_initial_s=0.01)
    ran = {"once": 0, "loop": 0}

    async def once() -> None:
        ran["once"] += 1

    async def loop_that_returns() -> None:
        ran["loop"] += 1

    sup.spawn("once", once, forever=False)
    sup.spawn("loop", loop_that_returns)
    await until(lambda: ran["loop"] >= 3)
    await sup.stop()
    assert ran["once"] == 1 and sup.restarts("once") == 0
    assert sup.restarts("loop") >= 2


async def test_optional_task_down_keeps_ready() -> None:
    health = Health()
    health.set_started()
    sup = Supervisor("unit-d", health, backoff_initial_s=10.0)
    failed = asyncio.Event()

    async def job() -> None:
        failed.set()
        raise RuntimeError("down")

    sup.spawn("extra", job, required=False)
    await failed.wait()
    await until(lambda: not sup.is_up("extra"))
    assert health.readiness()[0]
    await sup.stop()


async def test_stop_of_named_tasks_leaves_the_others(caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor("unit-e")
    forever = asyncio.Event()

    async def job() -> None:
        await forever.wait()

    async def deaf() -> None:
        while not forever.is_set():  # swallows its cancel: stop gives up on it after the bound
            with contextlib.suppress(asyncio.CancelledError):
                await forever.wait()

    sup.spawn("a", job)
    sup.spawn("b", job)
    sup.spawn("deaf", deaf)
    await until(lambda: sup.is_up("a") and sup.is_up("b") and sup.is_up("deaf"))
    await sup.stop("a")
    assert not sup.is_up("a") and sup.is_up("b")
    with caplog.at_level(logging.ERROR, logger="vgw.supervise"):
        await sup.stop(timeout_s=0.1)
    assert not sup.is_up("b")
    assert any("did not stop" in r.getMessage() for r in caplog.records)
    forever.set()  # let the deaf one end so the loop closes cleanly
    await until(lambda: not sup.is_up("deaf"))


async def test_names_are_unique() -> None:
    sup = Supervisor("unit-f")

    async def job() -> None:
        await asyncio.sleep(0)

    sup.spawn("x", job, forever=False)
    with pytest.raises(ValueError, match="already supervised"):
        sup.spawn("x", job)
    await sup.stop()
