"""`seppo_lib.progress`: tqdm in a terminal, bounded log lines elsewhere (KFP pod, CI, `| cat`)."""

from __future__ import annotations

import io
import logging

import pytest

from seppo_lib.progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "seppo_lib.progress"]


def test_non_tty_logs_every_tenth_with_postfix_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="seppo_lib.progress")
    bar = Progress(range(10), desc="round 1 (seppo)", unit="update", stream=io.StringIO(), clock=clock)
    for _ in bar:
        clock.now += 0.5
        bar.set_postfix(loss="0.6931")
    lines = _lines(caplog)
    assert 1 <= len(lines) <= 11
    assert lines[3] == "round 1 (seppo): 4/10 updates (40%), 2 update/s, ETA 3s, loss=0.6931"
    assert lines[-1] == "round 1 (seppo): 10/10 updates (100%), 2 update/s, took 5s, loss=0.6931"


def test_non_tty_bounded_for_many_steps_plus_final(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seppo_lib.progress")
    with Progress[None](total=1003, desc="sample", unit="img", stream=io.StringIO(), clock=FakeClock()) as bar:
        for _ in range(1003):
            bar.update()
    lines = _lines(caplog)
    assert [line.split(" ")[1] for line in lines] == [f"{n}/1003" for n in (101, 201, 301, 402, 502, 602, 703, 803, 903, 1003)]
    assert lines[-1].startswith("sample: 1003/1003 imgs (100%)")  # the 100 % line is the final one, not repeated


def test_non_tty_time_interval_without_total(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="seppo_lib.progress")
    bar: Progress[None] = Progress(desc="prepare_data", unit="row", stream=io.StringIO(), every_seconds=30, clock=clock)
    for _ in range(100):
        clock.now += 1.0
        bar.update(2)
    bar.close()
    bar.close()
    assert _lines(caplog) == [
        "prepare_data: 60 rows, 2 row/s", "prepare_data: 120 rows, 2 row/s", "prepare_data: 180 rows, 2 row/s",
        "prepare_data: 200 rows, 2 row/s",
    ]  # fmt: skip


def test_disabled_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seppo_lib.progress")
    list(Progress(range(5), desc="x", unit="step", stream=io.StringIO(), disable=True))
    assert _lines(caplog) == []


def test_tty_uses_tqdm_and_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seppo_lib.progress")
    tty = Tty()
    bar = Progress(range(4), desc="round 2 (dpo)", unit="update", stream=tty)
    for _ in bar:
        bar.set_postfix(loss="0.5000")
    assert bar.bar is not None
    assert "round 2 (dpo)" in tty.getvalue() and "4/4" in tty.getvalue() and "loss=0.5000" in tty.getvalue()
    assert _lines(caplog) == []
