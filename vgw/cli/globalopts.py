"""Options vgwctl takes before or after the subcommand: ``vgwctl --nats URL status`` and
``vgwctl status --nats URL``, ``vgwctl lab --id x up`` and ``vgwctl lab up --id x``,
``vgwctl -o json list vips`` and ``vgwctl list vips -o json``.

argparse alone accepts an option only on the parser that declares it, and a subcommand's default
overwrites a value given before the subcommand. :func:`install` runs once on the finished parser
tree, so a command module declares its options in the one place they belong and nothing else:

- an option of :data:`ANYWHERE` declared by a command is also accepted by every parser above it,
  and one declared on a parser with subcommands (``--nats`` on vgwctl, ``--id`` on lab) by every
  parser below it;
- every declaration's default becomes ``SUPPRESS``: an option not given leaves no attribute, so a
  value given in one position is never overwritten by another position's default (when one is
  given twice, the later wins, as for any repeated option).

After parsing, :func:`resolve` refuses an option given where the chosen command does not take it
(``vgwctl -o json events tail``: exit 2) or with a value that command does not accept, and fills in
the command's own defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any, NoReturn
from weakref import WeakKeyDictionary

ANYWHERE = frozenset(
    {
        "--nats",
        "--config-addr",
        "--token",
        "--token-file",
        "--tls",
        "--tls-ca",
        "--client-cert",
        "--client-key",
        "--tls-server-name",
        "--output",
        "--id",
    }
)

# The declarations a command made, with the defaults they had before install() suppressed them.
# Copies made by install() are not in here: that is how resolve() tells "the command takes it".
_DECLARED: WeakKeyDictionary[argparse.Action, Any] = WeakKeyDictionary()


def _key(action: argparse.Action) -> str | None:
    return next((s for s in action.option_strings if s in ANYWHERE), None)


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    # argparse has no public way to walk a parser tree; shtab and sphinx-argparse read _actions too.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _children(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    sub = _subcommands(parser)
    if sub is None:
        return []
    unique: dict[int, argparse.ArgumentParser] = {}
    for child in sub.choices.values():  # aliases name the same parser
        unique.setdefault(id(child), child)
    return list(unique.values())


def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for child in _children(parser):
        yield from walk(child)


def _declared(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {k: a for a in parser._actions if (k := _key(a)) is not None and a in _DECLARED}


def _has(parser: argparse.ArgumentParser, option: str) -> bool:
    return any(option in a.option_strings for a in parser._actions)


def _merged_choices(actions: list[argparse.Action]) -> list[Any] | None:
    if any(a.choices is None for a in actions):
        return None
    merged: list[Any] = []
    for a in actions:
        merged += [c for c in a.choices or () if c not in merged]
    return merged


def _group(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    found = next((g for g in parser._action_groups if g.title == title), None)
    return found if found is not None else parser.add_argument_group(title)


def _copy_onto(target: argparse._ArgumentGroup, model: argparse.Action, choices: list[Any] | None) -> None:
    kwargs: dict[str, Any] = {"dest": model.dest, "default": argparse.SUPPRESS, "help": model.help}
    if isinstance(model, argparse._StoreTrueAction):
        target.add_argument(*model.option_strings, action="store_true", **kwargs)
    elif type(model) is argparse._StoreAction and model.nargs is None:
        if model.type is not None:
            kwargs["type"] = model.type
        target.add_argument(*model.option_strings, choices=choices, metavar=model.metavar, **kwargs)
    else:
        raise TypeError(f"{'/'.join(model.option_strings)}: only plain options and flags can go anywhere")


def install(root: argparse.ArgumentParser) -> None:
    """Make the tree's :data:`ANYWHERE` options valid at every level of their commands' paths."""
    for parser in walk(root):
        for action in parser._actions:
            if _key(action) is not None and action not in _DECLARED:
                _DECLARED[action] = action.default
                action.default = argparse.SUPPRESS
    _push_down(root, {})
    _pull_up(root)


def _push_down(parser: argparse.ArgumentParser, inherited: dict[str, argparse.Action]) -> None:
    for key, model in inherited.items():
        if not _has(parser, key):
            _copy_onto(_group(parser, "options also taken before the command"), model, _merged_choices([model]))
    here = {**inherited, **_declared(parser)}
    for child in _children(parser):
        _push_down(child, here)


def _pull_up(parser: argparse.ArgumentParser) -> dict[str, list[argparse.Action]]:
    """Copy onto ``parser`` what its descendants declare; returns what it and they declare."""
    below: dict[str, list[argparse.Action]] = {}
    for child in _children(parser):
        for key, actions in _pull_up(child).items():
            below.setdefault(key, []).extend(actions)
    for key, actions in below.items():
        if not _has(parser, key):
            title = "options of the commands that take them, also taken here"
            _copy_onto(_group(parser, title), actions[0], _merged_choices(actions))
    for key, action in _declared(parser).items():
        below.setdefault(key, []).append(action)
    return below


def _path(root: argparse.ArgumentParser, args: argparse.Namespace) -> list[argparse.ArgumentParser]:
    path = [root]
    while (sub := _subcommands(path[-1])) is not None:
        name = getattr(args, sub.dest, None)
        if name is None:
            break
        path.append(sub.choices[name])
    return path


def _error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.error(message)


def resolve(root: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check the options given against the chosen command; fill in its defaults (exit 2 on misuse)."""
    path = _path(root, args)
    leaf = path[-1]
    takes: dict[str, argparse.Action] = {}
    for parser in path:  # the declaration nearest the command wins
        takes.update(_declared(parser))
    for parser in path:
        for action in parser._actions:
            key = _key(action)
            if key is None or not hasattr(args, action.dest):
                continue
            own = takes.get(key)
            if own is None:
                _error(leaf, f"{'/'.join(action.option_strings)} does not apply to '{leaf.prog}'")
            value = getattr(args, action.dest)
            if own.choices is not None and value not in own.choices:
                allowed = ", ".join(map(repr, own.choices))
                _error(
                    leaf, f"argument {'/'.join(own.option_strings)}: invalid choice: {value!r} (choose from {allowed})"
                )
    for action in takes.values():
        if not hasattr(args, action.dest):
            setattr(args, action.dest, _DECLARED[action])
