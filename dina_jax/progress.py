"""Progress a person can read: durations, ETAs, and bars only on a terminal.

Bars are tqdm's with ``disable=None``: tqdm draws them when its stream is a terminal and stays
silent otherwise, so a log file or a notebook output gets the one-line summaries the training
loop and the analyses print, never carriage-return noise.
"""

from __future__ import annotations

import math

from tqdm import tqdm


def format_duration(seconds: float) -> str:
    """``"42s"``, ``"3m05s"``, ``"1h02m"``; ``"?"`` for an unknown (NaN or infinite) duration."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def eta(seconds_per_unit: float, units_left: float) -> float:
    """Seconds left at the measured pace (NaN before anything was measured)."""
    if not seconds_per_unit > 0:
        return math.nan
    return seconds_per_unit * max(units_left, 0)


def bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar drawn only on a terminal (and only where ``enabled``)."""
    return tqdm(iterable, disable=None if enabled else True, dynamic_ncols=True, **kwargs)
