"""VGW monitor: end-to-end VIP probes from vantage points, per-node blackhole detection, SLIs and
guarded withdraw requests."""
