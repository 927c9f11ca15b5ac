"""The forwarder's preStop hook in a pod: return once this node's route control has stopped.

Kubernetes runs every container's preStop hook at once, then sends each container SIGTERM when its
own hook returns. Route control (no hook) gets SIGTERM at once and withdraws every route of the
node before it exits; its /healthz endpoint is the last thing it closes (vgw.runtime). So the
forwarder waits here until that endpoint refuses connections -- route control is gone and its
routes with it -- and only then gets its SIGTERM: no router keeps sending traffic to a stopped
forwarder. Bounded by ``--timeout`` (below the pod's termination grace period), so a wedged route
control delays the stop, never blocks it.

    python -m dataplane.shim.fwdprestop --url http://127.0.0.1:9103/healthz --timeout 20
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request


def routectl_running(url: str) -> bool:
    """Whether anything still answers at url: any HTTP status counts (a stopping service says 503)."""
    try:
        with urllib.request.urlopen(url, timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dataplane.shim.fwdprestop", description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="route control's /healthz on this node")
    ap.add_argument("--timeout", type=float, required=True, help="give up after this many seconds")
    args = ap.parse_args(argv)
    if args.timeout <= 0:
        ap.error("--timeout must be > 0")
    t0 = time.monotonic()
    while routectl_running(args.url):
        if time.monotonic() - t0 >= args.timeout:
            print(f"fwdprestop: route control still answers at {args.url} after {args.timeout:.0f}s", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"fwdprestop: route control stopped after {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
