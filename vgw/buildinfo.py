"""What is running: the package version, the git commit it was built from, the Python. Shown by
``vgwctl --version`` and exported by every service as ``vgw_build_info`` (vgw/metrics.py).

The commit is ``$VGW_BUILD_COMMIT`` when set (an image build passes it: the image has no .git),
else the commit of the checkout the package runs from, else ``unknown``.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from vgw import __version__

UNKNOWN = "unknown"
_SOURCE = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class BuildInfo:
    version: str
    commit: str
    python: str

    def line(self, prog: str) -> str:
        return f"{prog} {self.version} (commit {self.commit}, Python {self.python})"


def _version() -> str:
    try:
        return version("vgw")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return __version__


def _commit() -> str:
    env = os.environ.get("VGW_BUILD_COMMIT", "").strip()
    if env:
        return env
    if not (_SOURCE / ".git").exists():
        return UNKNOWN
    try:
        r = subprocess.run(
            ["git", "-C", str(_SOURCE), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else UNKNOWN


@functools.cache
def build_info() -> BuildInfo:
    return BuildInfo(version=_version(), commit=_commit(), python=platform.python_version())
