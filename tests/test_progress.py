"""Durations and ETAs as a person reads them; bars only on a terminal."""

import io
import math

import pytest

from dina_jax import progress


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(3.21, "3.2s"), (42.4, "42s"), (185, "3m05s"), (3725, "1h02m"), (math.nan, "?")],
)
def test_format_duration(seconds, text):
    assert progress.format_duration(seconds) == text


def test_eta_is_pace_times_what_is_left():
    assert progress.eta(12.0, 5) == 60.0
    assert progress.eta(12.0, 0) == 0.0
    assert math.isnan(progress.eta(0.0, 5))


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bar_draws_on_a_terminal_only():
    for stream, drawn in ((io.StringIO(), False), (_Terminal(), True)):
        for _ in progress.bar(range(3), file=stream, desc="work"):
            pass
        assert ("work" in stream.getvalue()) == drawn
    silent = _Terminal()
    for _ in progress.bar(range(3), file=silent, enabled=False):
        pass
    assert silent.getvalue() == ""
