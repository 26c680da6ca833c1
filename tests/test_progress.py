"""Progress: bars on a terminal, timed plain lines elsewhere, never changing what is iterated."""
from __future__ import annotations

import io
import sys

import pytest

from tadkit.progress import Progress, VideoProgress, progress_bar, track


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


# --------------------------------------------------------------------------- plain lines, per-snippet progress
class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_off_a_terminal_a_plain_line_comes_at_a_fixed_interval():
    out, clock = io.StringIO(), _Clock()
    p = Progress(4, "infer", "video", stream=out, interval=30, clock=clock)
    p.update(1, "12 videos/s")
    assert out.getvalue() == ""                      # nothing before the interval
    clock.t = 31
    p.update(1)
    clock.t = 40
    p.update(0.5)                                     # within the next interval: quiet
    clock.t = 62
    p.update(0.5)
    assert out.getvalue().splitlines() == ["infer: 2/4 videos (50%), 31 s, 12 videos/s",
                                           "infer: 3/4 videos (75%), 1 min 2 s, 12 videos/s"]


def test_progress_can_be_switched_off_and_reads_its_interval_from_the_environment(monkeypatch):
    out, clock = io.StringIO(), _Clock()
    monkeypatch.setenv("TADKIT_PROGRESS_INTERVAL", "5")
    p = Progress(2, "x", "item", stream=out, clock=clock)
    assert p.interval == 5
    off = Progress(2, "x", "item", enabled=False, stream=out, clock=clock)
    clock.t = 100
    off.update(1)
    assert out.getvalue() == ""


def test_video_progress_moves_within_a_video():
    out, clock = io.StringIO(), _Clock()
    vp = VideoProgress(2, "extract", stream=out, interval=10, clock=clock)
    vp.start("long", 400)
    clock.t = 11
    vp.advance("long", 100)                           # a quarter of one video of two
    assert vp.progress.done == pytest.approx(0.25)
    assert out.getvalue() == "extract: 0.2/2 videos (12%), 11 s, long 100/400 snippets, 9.1 snippets/s, 0 failed\n"
    vp.start("long", None)                            # decoder restart: its share is given back
    assert vp.progress.done == pytest.approx(0.0)
    vp.start("long", 400)
    vp.advance("long", 400)
    vp.finish("long")
    vp.start("bad", 10)
    vp.advance("bad", 5)
    vp.finish("bad", failed=True)
    assert vp.progress.done == pytest.approx(2.0) and vp.failed == 1


def test_extract_prints_snippet_progress_lines_when_not_on_a_terminal(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from tadkit.cli import cli
    from test_extract_helpers import make_video

    make_video(tmp_path / "v.avi", n=40)
    monkeypatch.setenv("TADKIT_PROGRESS_INTERVAL", "0")
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "v.avi"), "--out", str(tmp_path / "f"),
                                   "--streams", "rgb", "--size", "32", "--device", "cpu", "--random-weights",
                                   "--batch-size", "2", "--stride", "4", "--clip-len", "8"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("extract: ")]
    # 9 snippets in batches of 2: the video advances in steps of 2/9 before it is done
    assert lines[0].startswith("extract: 0/1 videos (0%)") and "v 0/9 snippets" in lines[0]
    assert lines[1].startswith("extract: 0.2/1 videos (22%)") and "v 2/9 snippets" in lines[1]
    assert any(line.startswith("extract: 1/1 videos (100%)") for line in lines)
