"""Supervised long-running tasks: a task that ends on an unexpected exception is restarted.

A bare ``asyncio.create_task`` that raises ends for good and nobody notices: the process stays up,
``/readyz`` says 200, and the service has silently stopped doing one of its jobs. Every long-running
task of a service therefore runs under a :class:`Supervisor`:

* an unexpected exception is logged with its traceback, counted in
  ``vgw_task_restarts_total{service,task}``, and the task is started again after a backoff that
  doubles from ``backoff_initial_s`` to ``backoff_max_s`` (reset once a run lasted ``healthy_after_s``);
* while a *required* task is down (between its failure and its next start, or after it returned when
  it should not have), the ``tasks`` readiness check fails and ``/readyz`` answers 503, naming it;
* a task that returns normally is done (not restarted); one marked ``forever`` that returns is a bug
  and is treated like a failure;
* cancellation (service stop) is never a failure.

The task is given as a factory (``lambda: self._loop()``) so that each restart gets a fresh coroutine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from vgw.telemetry.endpoint import Health

log = logging.getLogger("vgw.supervise")

TASK_RESTARTS = Counter(
    "vgw_task_restarts_total",
    "Long-running tasks restarted after an unexpected exception",
    ["service", "task"],
)
TASK_UP = Gauge("vgw_task_up", "1 while a supervised long-running task runs", ["service", "task"])


@dataclass
class _Task:
    name: str
    factory: Callable[[], Awaitable[None]]
    required: bool
    forever: bool
    runner: asyncio.Task[None] | None = None
    up: bool = False
    done: bool = False
    last_error: str = ""
    restarts: int = 0
    stopping: bool = False


class Supervisor:
    """Runs named tasks, restarts the ones that fail, and reports them to readiness."""

    def __init__(
        self,
        service: str,
        health: Health | None = None,
        *,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 10.0,
        healthy_after_s: float = 30.0,
    ) -> None:
        self.service = service
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.healthy_after_s = healthy_after_s
        self._tasks: dict[str, _Task] = {}
        self._stopping = False
        if health is not None:
            health.add_check("tasks", self.readiness)

    def spawn(
        self,
        name: str,
        factory: Callable[[], Awaitable[None]],
        *,
        required: bool = True,
        forever: bool = True,
    ) -> None:
        """Start ``factory()`` as task ``name`` (unique per supervisor) and keep it running."""
        if name in self._tasks:
            raise ValueError(f"task {name!r} already supervised")
        t = _Task(name, factory, required, forever)
        self._tasks[name] = t
        TASK_RESTARTS.labels(self.service, name).inc(0)
        TASK_UP.labels(self.service, name).set(0)
        t.runner = asyncio.create_task(self._keep(t), name=f"{self.service}:{name}")

    def readiness(self) -> tuple[bool, str]:
        down = [
            f"{t.name} ({t.last_error or 'not running'})"
            for t in self._tasks.values()
            if t.required and not t.up and not t.done
        ]
        return (not down, "task(s) down: " + ", ".join(down))

    def restarts(self, name: str) -> int:
        return self._tasks[name].restarts

    def is_up(self, name: str) -> bool:
        return self._tasks[name].up

    async def stop(self, *names: str, timeout_s: float = 5.0) -> None:
        """Cancel the named tasks (every task when none is named) and wait, bounded, for them to end.

        Bounded because on Python 3.11 a cancel that races a completing ``wait_for`` can be swallowed;
        a task that survives its cancel is abandoned with an error line rather than hang shutdown.
        """
        chosen = [self._tasks[n] for n in names] if names else list(self._tasks.values())
        if not names:
            self._stopping = True
        for t in chosen:
            t.stopping = True
        runners = [t.runner for t in chosen if t.runner is not None and not t.runner.done()]
        for r in runners:
            r.cancel()
        if runners:
            _, pending = await asyncio.wait(runners, timeout=timeout_s)
            for r in pending:
                log.error("task %s did not stop within %.1fs", r.get_name(), timeout_s)

    async def _keep(self, t: _Task) -> None:
        backoff = self.backoff_initial_s
        while not (self._stopping or t.stopping):
            began = time.monotonic()
            self._set_up(t, True)
            failure: Exception | None = None
            try:
                await t.factory()
            except asyncio.CancelledError:
                self._set_up(t, False)
                raise
            except Exception as exc:
                failure = exc
            self._set_up(t, False)
            if self._stopping or t.stopping:
                return  # ended while being stopped (e.g. a cancel the task turned into a return)
            if failure is None and not t.forever:
                t.done = True
                return
            if time.monotonic() - began >= self.healthy_after_s:
                backoff = self.backoff_initial_s
            if failure is not None:
                t.last_error = f"{type(failure).__name__}: {failure}"[:200]
                log.error(
                    "task %s failed: restarting in %.1fs",
                    t.name,
                    backoff,
                    exc_info=failure,
                    extra={"task": t.name, "service": self.service},
                )
            else:
                t.last_error = "returned"
                log.error("task %s returned: restarting in %.1fs", t.name, backoff, extra={"task": t.name})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)
            t.restarts += 1
            TASK_RESTARTS.labels(self.service, t.name).inc()

    def _set_up(self, t: _Task, up: bool) -> None:
        t.up = up
        TASK_UP.labels(self.service, t.name).set(1 if up else 0)
