"""``vgw-routectl``: route control for one node (``VGW_NODE_ID``) on the vgw runtime."""

from __future__ import annotations

from vgw.runtime import run

from .app import Routectl
from .settings import RoutectlSettings


def main() -> None:
    run("routectl", Routectl, RoutectlSettings)


if __name__ == "__main__":
    main()
