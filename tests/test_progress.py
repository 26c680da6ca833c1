"""Progress bars: on a terminal only, and never changing what is iterated."""
from __future__ import annotations

import io
import sys

from tadkit.progress import progress_bar, track


def test_quiet_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_bar(10, "x", "item") is None
    assert list(track(range(5), 5, "x", "item")) == [0, 1, 2, 3, 4]
    assert sys.stderr.getvalue() == ""


def test_forced_bar_counts_every_item(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert list(track(iter("abc"), 3, "letters", "letter", enabled=True)) == ["a", "b", "c"]
    assert "letters" in err.getvalue() and "3/3" in err.getvalue()


def test_nothing_to_do_shows_no_bar():
    assert progress_bar(0, "x", "item", enabled=True) is None
