"""`vgwctl --version` and the `vgw_build_info` gauge every service exports (vgw/buildinfo.py)."""

from __future__ import annotations

import platform
import re
import subprocess
from importlib.metadata import version
from pathlib import Path

from tests.cli.vgwctl import REPO, run
from tests.config.conftest import ConfigService
from tests.support.nats_server import NatsServer


def head_commit() -> str:
    r = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
    )
    return r.stdout.strip()


def test_version_names_the_package_version_and_the_commit(child_env: dict[str, str]) -> None:
    r = run("--version", env=child_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"vgwctl {version('vgw')} (commit {head_commit()}, Python {platform.python_version()})\n"
    r = run("status", "--version", env=child_env)  # vgwctl's own option, not a command's
    assert r.returncode == 2 and "unrecognized arguments: --version" in r.stderr
    r = run("--version", env={**child_env, "VGW_BUILD_COMMIT": "0123abcd4567"})
    assert "(commit 0123abcd4567," in r.stdout  # what an image build passes in


def test_a_real_service_exports_build_info(nats_server: NatsServer, tmp_path: Path, child_env: dict[str, str]) -> None:
    svc = ConfigService(nats_server, tmp_path / "config", child_env).start()
    try:
        text = svc.metrics()
    finally:
        svc.stop(kill=True)
    assert "# TYPE vgw_build_info gauge" in text
    [sample] = [line for line in text.splitlines() if line.startswith("vgw_build_info{")]
    labels = dict(re.findall(r'(\w+)="([^"]*)"', sample))
    assert labels == {"version": version("vgw"), "commit": head_commit(), "python": platform.python_version()}
    assert sample.endswith(" 1.0")
