"""Shared by the deployment tests: paths, the console scripts, the rendered Helm chart."""

from __future__ import annotations

import functools
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "vgw"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
DASHBOARDS = DEPLOY / "dashboards"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
SYSTEMD = DEPLOY / "systemd"
DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))

# Binaries of the dataplane (dataplane/Makefile builds them under dataplane/build/).
DATAPLANE_BINARIES = {"vgw-fwd"}


@functools.cache
def console_scripts() -> dict[str, str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return dict(data["project"]["scripts"])


def makefile_targets() -> set[str]:
    text = (REPO / "dataplane" / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^\$\(BUILD\)/([\w.-]+):", text, re.M)}


def healthcheck_argv(dockerfile: Path) -> list[str]:
    """The HEALTHCHECK command of a Dockerfile (exec form)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    m = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.M)
    assert m, f"{dockerfile.name}: no HEALTHCHECK in exec form"
    return list(json.loads(m.group(1)))


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


# The least a user must give the chart (it refuses to render an unauthenticated form otherwise).
SECURED_VALUES: dict[str, Any] = {"security": {"existingSecret": "vgw-security"}}


def render_chart(
    values: dict[str, Any] | None = None, name: str = "vgw", namespace: str = "vgw"
) -> list[dict[str, Any]]:
    """The real chart rendered by Helm's own engine (helm-python-sdk: Helm v4's Go SDK, no binary).
    No values: the secured minimum (SECURED_VALUES); pass {} for the chart's bare defaults."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(SECURED_VALUES if values is None else values, name=name, namespace=namespace)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def security_init_dir() -> Any:
    """`vgw.security.init_dir` (what `vgwctl security init` runs), or skip while it does not exist."""
    import pytest

    try:
        from vgw.security import init_dir
    except ImportError:
        pytest.skip("vgw.security.init_dir is not available")
    return init_dir
