"""The one progress mechanism: i/N and an ETA, as plain log lines off a terminal and as a bar on one."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from robustsoup import progress as progress_module
from robustsoup.progress import Progress, duration, progress

LINE = re.compile(r"^(?P<desc>.+): (?P<i>\d+)/(?P<n>\d+) (?P<unit>\w[\w ]*) \(\d+%\), \S+ elapsed, ETA (\S+)$")


def progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "robustsoup.progress"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (0, 7.4, 65, 3600 + 180)] == ["0s", "7s", "1m05s", "1h03m"]


def test_every_step_logs_a_plain_line_with_i_of_n_and_an_eta(caplog, monkeypatch):
    monkeypatch.setattr(progress_module, "INTERVAL_S", 0.0)
    caplog.set_level(logging.INFO, logger="robustsoup.progress")
    assert list(progress(range(4), "loop", unit="batches")) == [0, 1, 2, 3]
    lines = progress_lines(caplog)
    assert [LINE.match(line).group("i") for line in lines] == ["1", "2", "3", "4"]
    assert all(LINE.match(line).group("n") == "4" and "\r" not in line for line in lines)
    assert lines[-1].endswith("ETA 0s") and lines[0].startswith("loop: 1/4 batches (25%)")


def test_lines_are_rate_limited_but_the_end_is_always_said(caplog):
    caplog.set_level(logging.INFO, logger="robustsoup.progress")
    with Progress(1000, "fast", interval=3600) as counter:
        for _ in range(1000):
            counter.advance()
    assert progress_lines(caplog) == [progress_lines(caplog)[0]] and "1000/1000" in progress_lines(caplog)[0]


def test_a_loop_cut_short_says_where_it_stopped(caplog):
    caplog.set_level(logging.INFO, logger="robustsoup.progress")
    with pytest.raises(RuntimeError), Progress(5, "cut", interval=3600) as counter:
        counter.advance(2)
        raise RuntimeError("boom")
    assert progress_lines(caplog) == [progress_lines(caplog)[0]]
    assert "2/5" in progress_lines(caplog)[0] and progress_lines(caplog)[0].endswith("(stopped)")


def test_only_the_outermost_loop_speaks(caplog, monkeypatch):
    monkeypatch.setattr(progress_module, "INTERVAL_S", 0.0)
    caplog.set_level(logging.INFO, logger="robustsoup.progress")
    for _ in progress(range(2), "outer"):
        for _ in progress(range(3), "inner"):
            pass
    assert [line.split(":")[0] for line in progress_lines(caplog)] == ["outer", "outer"]
    assert list(progress(range(1), "after")) == [0] and progress_lines(caplog)[-1].startswith("after: 1/1")


def test_a_terminal_gets_a_bar_and_no_log_lines(caplog, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    caplog.set_level(logging.INFO, logger="robustsoup.progress")
    list(progress(range(3), "bar"))
    assert progress_lines(caplog) == []
    assert "\r" in terminal.getvalue() and "3/3" in terminal.getvalue()


def test_without_logging_the_lines_go_to_stderr(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    list(progress(range(2), "plain", interval=3600))
    assert stream.getvalue().startswith("plain: 2/2 steps (100%)") and "\r" not in stream.getvalue()
