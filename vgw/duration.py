"""Durations as operators write them: ``250ms``, ``30s``, ``5m``, ``1h30m``, ``7d``."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; a bare number is seconds. Raises ValueError with the reason."""
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration")
    try:
        value = float(s)
    except ValueError:
        pos, value = 0, 0.0
        for m in _PART.finditer(s):
            if m.start() != pos:
                break
            value += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(s):
            raise ValueError(f"{text!r} is not a duration (examples: 250ms, 30s, 5m, 1h30m, 7d)") from None
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite, non-negative duration")
    return value
