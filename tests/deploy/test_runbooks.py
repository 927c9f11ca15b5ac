"""Every alert points at its runbook: a ``runbook_url`` into docs/runbooks.md whose anchor is a
section there; no section is left for an alert that no longer exists; the page's own links resolve;
and every ``vgwctl`` command a runbook tells an operator to run exists."""

from __future__ import annotations

import argparse
import re

import yaml

from tests.deploy.common import ALERTS, DEPLOY, REPO
from vgw.cli.main import build_parser

RUNBOOKS = REPO / "docs" / "runbooks.md"
PREFIX = "docs/runbooks.md#"


def slug(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(markdown: str) -> dict[str, str]:
    return {slug(m.group(2)): m.group(2) for m in re.finditer(r"^(#{1,6}) (.+)$", markdown, re.M)}


def alerts() -> dict[str, dict[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return {r["alert"]: r.get("annotations", {}) for g in rules["groups"] for r in g["rules"]}


def test_every_alert_has_a_runbook_url_with_a_section() -> None:
    anchors = headings(RUNBOOKS.read_text())
    missing = {}
    for name, notes in alerts().items():
        url = notes.get("runbook_url", "")
        if not url.startswith(PREFIX) or url.removeprefix(PREFIX) not in anchors:
            missing[name] = url
        elif anchors[url.removeprefix(PREFIX)] != name:
            missing[name] = f"{url} is the section of {anchors[url.removeprefix(PREFIX)]}"
    assert missing == {}


def test_no_section_for_an_alert_that_does_not_exist() -> None:
    sections = {h for h in headings(RUNBOOKS.read_text()).values() if re.fullmatch(r"Vgw\w+", h)}
    assert sections == set(alerts())


def test_links_within_the_page_resolve() -> None:
    text = RUNBOOKS.read_text()
    anchors = headings(text)
    assert {a for a in re.findall(r"\]\(#([^)]+)\)", text) if a not in anchors} == set()


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public way to walk its tree
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_vgwctl_command_in_the_runbooks_exists() -> None:
    commands = re.findall(r"`vgwctl ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", RUNBOOKS.read_text())
    assert len(commands) > 30
    top = _subcommands(build_parser())
    unknown = []
    for first, second in commands:
        if first not in top:
            unknown.append(first)
            continue
        below = _subcommands(top[first])
        if below and second not in below:
            unknown.append(f"{first} {second}")
    assert unknown == []


def test_the_helm_chart_ships_the_same_rules() -> None:
    chart_copy = DEPLOY / "helm/vgw/files/alerts.yml"
    assert chart_copy.read_text() == ALERTS.read_text()
