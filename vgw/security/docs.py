"""The permission matrix as markdown, for docs/security.md (a test keeps the doc in step).

python -m vgw.security.docs docs/security.md    # rewrite the generated part in place
"""

from __future__ import annotations

import sys
from pathlib import Path

from .identities import Identity, identities, nats_permissions

BEGIN = "<!-- BEGIN generated matrix: python -m vgw.security.docs docs/security.md -->"
END = "<!-- END generated matrix -->"
NODE = "<node>"


def _code(items: list[str] | tuple[str, ...]) -> str:
    return "<br>".join(f"`{i}`" for i in items) or "-"


def summary_table(idents: list[Identity]) -> str:
    rows = [
        "| identity | config API role (OU) | reads KV | writes KV keys | may create | publishes | subscribes |",
        "|---|---|---|---|---|---|---|",
    ]
    for i in idents:
        g = i.grants
        subs = []
        if g.events:
            subs.append("event stream (consumers)")
        if g.core_events:
            subs.append("`vgw.v1.>` (core)")
        subs += [f"`{s}` (core, live)" for s in g.live_events]
        subs.append(f"own inbox `{i.inbox_prefix}.>`")
        rows.append(
            "| "
            + " | ".join(
                [
                    f"`{i.name}`",
                    i.api_role,
                    _code(g.reads),
                    _code([f"{b}: {k}" for b, k in g.writes]),
                    _code(g.creates),
                    _code(g.publishes),
                    "<br>".join(subs),
                ]
            )
            + " |"
        )
    return "\n".join(rows)


def subjects_table(idents: list[Identity]) -> str:
    rows = ["| identity | publish allow | subscribe allow |", "|---|---|---|"]
    for i in idents:
        pub, sub = nats_permissions(i)
        rows.append(f"| `{i.name}` | {_code(pub)} | {_code(sub)} |")
    return "\n".join(rows)


def render() -> str:
    """The generated part of docs/security.md (between the markers, markers included)."""
    idents = identities([NODE], check=False)
    return "\n".join(
        [
            BEGIN,
            "",
            "What each identity may do (`<node>` stands for each node's id):",
            "",
            summary_table(idents),
            "",
            "The exact NATS subjects each identity may publish and subscribe to (everything else is denied):",
            "",
            subjects_table(idents),
            "",
            END,
        ]
    )


def extract(text: str) -> str | None:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return None
    return text[start : end + len(END)]


def update(path: Path) -> bool:
    """Rewrite the generated part of ``path``; True if it changed."""
    text = path.read_text()
    old = extract(text)
    if old is None:
        raise SystemExit(f"{path}: markers {BEGIN!r} ... {END!r} not found")
    new = text.replace(old, render())
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    print("updated" if update(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/security.md")) else "up to date")
