"""The VGW shared library: events, bus, store, telemetry, settings and runtime."""

__version__ = "0.1.0"
