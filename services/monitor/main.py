"""vgw-monitor entry point (docs/monitor.md)."""

from __future__ import annotations

from vgw.runtime import run

from .app import MonitorApp, MonitorSettings


def main() -> None:
    run("monitor", MonitorApp, MonitorSettings)


if __name__ == "__main__":
    main()
