"""The fenced blocks of a Markdown page and the simple commands in its shell blocks.

Used by test_production_doc.py to bind every command of docs/production.md to something that runs
it. A block may be preceded by an HTML comment (``<!-- check: ... -->`` or ``<!-- not run here:
... -->``) saying how it is checked; readers of the rendered page do not see it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(r"^<!--\s*(.*?)\s*-->\s*$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Control operators end a simple command; redirections take the next word as their target.
_SEPARATORS = {";", "&&", "||", "|", "&"}
_REDIRECTS = {">", ">>", "<", "&>"}


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # of the opening fence, 1-based
    marker: str | None  # the comment's text right before the fence, if any


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # NAME=VALUE words before the command
    redirects: tuple[tuple[str, str], ...]  # (operator, target)
    piped_into: str | None  # the next command's program when this one feeds a pipe
    line: int  # in the page, 1-based
    text: str  # the logical line it came from

    @property
    def program(self) -> str:
        return self.argv[0]

    def options(self) -> list[str]:
        """Every option word, without an ``=value`` part: ``--bind=vfio-pci`` -> ``--bind``."""
        return [w.split("=", 1)[0] for w in self.argv[1:] if w.startswith("-") and len(w) > 1]


def blocks(markdown: str) -> list[Block]:
    out: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"line {start + 1}: code block never closed")
        marker = _MARKER.match(lines[start - 1]) if start > 0 else None
        out.append(Block(m.group(1), "\n".join(body) + "\n", start + 1, marker.group(1) if marker else None))
        i += 1
    return out


def _logical_lines(block: Block) -> list[tuple[int, str]]:
    """Lines with backslash continuations joined, each with its page line number."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    first = 0
    for n, raw in enumerate(block.text.splitlines(), start=block.line + 1):
        if not pending:
            first = n
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        text = " ".join(p.strip() for p in pending).strip()
        pending = []
        if text and not text.startswith("#"):
            out.append((first, text))
    if pending:
        raise ValueError(f"line {first}: a continuation line ends the block")
    return out


def _split(text: str) -> list[list[str]]:
    """Words per simple command, separators kept as their own items between them."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    words = list(lex)
    groups: list[list[str]] = [[]]
    for w in words:
        if w in _SEPARATORS:
            groups.append([w])
            groups.append([])
        else:
            groups[-1].append(w)
    return [g for g in groups if g]


def commands(block: Block) -> list[Command]:
    out: list[Command] = []
    for line, text in _logical_lines(block):
        parts = _split(text)
        parsed: list[tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]] = []
        pipes: list[bool] = []
        for part in parts:
            if len(part) == 1 and part[0] in _SEPARATORS:
                if part[0] == "&":
                    raise ValueError(f"line {line}: background commands are not checked: {text}")
                pipes.append(part[0] == "|")
                continue
            env: list[tuple[str, str]] = []
            argv: list[str] = []
            redirects: list[tuple[str, str]] = []
            it = iter(part)
            for w in it:
                if w in _REDIRECTS:
                    target = next(it, None)
                    if target is None:
                        raise ValueError(f"line {line}: redirection without a target: {text}")
                    redirects.append((w, target))
                elif not argv and _ASSIGNMENT.match(w):
                    name, _, value = w.partition("=")
                    env.append((name, value))
                else:
                    argv.append(w)
            if not argv:
                raise ValueError(f"line {line}: no command in {text!r}")
            parsed.append((argv, env, redirects))
        for i, (argv, env, redirects) in enumerate(parsed):
            feeds = i < len(pipes) and pipes[i]
            out.append(
                Command(
                    argv=tuple(argv),
                    env=tuple(env),
                    redirects=tuple(redirects),
                    piped_into=parsed[i + 1][0][0] if feeds and i + 1 < len(parsed) else None,
                    line=line,
                    text=text,
                )
            )
    return out
