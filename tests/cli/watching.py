"""Running a vgwctl live view with ``--watch`` for a bounded time: read frames as they come, then
interrupt it the way a person does (SIGINT) and collect its exit status."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from typing import Any

from tests.cli.vgwctl import REPO


def watch_frames(*argv: str, env: dict[str, str], frames: int, timeout: float = 30) -> tuple[list[Any], int, str]:
    """``frames`` JSON lines of ``vgwctl ARGV`` (which must include ``--watch ... -o json``), then
    SIGINT; returns the frames, the exit status and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vgw.cli.main", *argv],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    got: list[Any] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while len(got) < frames:
            left = deadline - time.monotonic()
            assert left > 0 and proc.poll() is None, f"{len(got)} frames in {timeout}s; stderr: {proc.stderr.read()}"
            if sel.select(min(left, 0.5)):
                line = proc.stdout.readline()
                if line:
                    got.append(json.loads(line))
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=15)
        return got, code, proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
