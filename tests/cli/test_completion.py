"""`vgwctl completion bash|zsh`: scripts generated from the parser that load in the real shells and
complete this version's commands, options and choices."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.vgwctl import run


def bash_complete(script: Path, words: list[str]) -> list[str]:
    """What bash offers for the last of ``words`` (the completion function, as bash calls it)."""
    line = " ".join(words)
    program = (
        f"source {script}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        f"COMP_LINE={line!r}; COMP_POINT={len(line)}\n"
        '_shtab_vgwctl vgwctl; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    r = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_script_loads_and_completes(child_env: dict[str, str], tmp_path: Path) -> None:
    r = run("completion", "bash", env=child_env)
    assert r.returncode == 0, r.stderr
    script = tmp_path / "vgwctl.bash"
    script.write_text(r.stdout)
    # what docs/vgwctl.md tells people to run (child_env has the venv's vgwctl first on PATH)
    loaded = subprocess.run(
        ["bash", "--norc", "-c", "source <(vgwctl completion bash); complete -p vgwctl"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=child_env,
    )
    assert loaded.returncode == 0 and loaded.stdout.strip() == "complete -o bashdefault -F _shtab_vgwctl vgwctl"
    assert loaded.stderr == ""
    assert {"validate", "completion", "diff", "apply"} <= set(bash_complete(script, ["vgwctl", ""]))
    assert bash_complete(script, ["vgwctl", "vali"]) == ["validate"]
    assert "--config-addr" in bash_complete(script, ["vgwctl", "list", "--con"])
    assert "--config-addr" in bash_complete(script, ["vgwctl", "--con"])  # before the command too
    assert bash_complete(script, ["vgwctl", "completion", ""]) == ["bash", "zsh"]
    assert bash_complete(script, ["vgwctl", "lab", "status", "-o", ""]) == ["table", "json"]


def test_zsh_script_compiles_and_registers(child_env: dict[str, str], tmp_path: Path) -> None:
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed (`make setup` installs it: scripts/apt-packages.txt)")
    r = run("completion", "zsh", env=child_env)
    assert r.returncode == 0, r.stderr
    fpath = tmp_path / "fpath"
    fpath.mkdir()
    (fpath / "_vgwctl").write_text(r.stdout)
    assert r.stdout.startswith("#compdef vgwctl")
    program = (
        f"zcompile {fpath}/_vgwctl || exit 9\n"
        f"fpath=({fpath} $fpath); autoload -Uz compinit; compinit -D -u\n"
        "print -r -- $_comps[vgwctl]\n"
    )
    z = subprocess.run(
        [zsh, "-f", "-c", program],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert z.returncode == 0 and z.stdout.strip() == "_vgwctl", (z.stdout, z.stderr)
    assert (fpath / "_vgwctl.zwc").is_file()


def test_unknown_shell_exits_2(child_env: dict[str, str]) -> None:
    r = run("completion", "fish", env=child_env)
    assert r.returncode == 2 and "invalid choice: 'fish'" in r.stderr and r.stdout == ""
