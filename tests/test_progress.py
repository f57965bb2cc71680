"""The progress bar: hidden off a terminal, throttled, with a readable estimate of the time left."""

from __future__ import annotations

import io

import pytest

from gradproof.engine.progress import Progress, time_left


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def frames(stream: io.StringIO) -> list[str]:
    """The lines drawn so far, each without its carriage return and trailing padding."""
    return [frame.rstrip() for frame in stream.getvalue().split("\r")[1:]]


def test_hidden_when_the_stream_is_not_a_terminal():
    out, clock = io.StringIO(), FakeClock()
    progress = Progress(10, stream=out, clock=clock)
    assert not progress.enabled
    for _ in range(10):
        clock.now += 1.0
        progress.advance()
    progress.close()
    assert out.getvalue() == ""
    assert progress.done == 10  # still counted


def test_shown_on_a_terminal_by_default():
    out, clock = Terminal(), FakeClock()
    progress = Progress(10, stream=out, clock=clock)
    clock.now = 0.5
    progress.advance(5)
    assert frames(out) == ["gradproof  [##########          ]  50%  5/10 evaluations  ~1 s left"]


def test_enabled_overrides_the_terminal_test():
    clock = FakeClock(1.0)
    forced = io.StringIO()
    Progress(4, stream=forced, enabled=True, clock=clock, min_interval=0).advance()
    assert frames(forced) == ["gradproof  [#####               ]  25%  1/4 evaluations"]
    silenced = Terminal()
    Progress(4, stream=silenced, enabled=False, clock=clock, min_interval=0).advance()
    assert silenced.getvalue() == ""


def test_a_closed_stream_counts_as_no_terminal():
    closed = io.StringIO()
    closed.close()
    assert not Progress(3, stream=closed).enabled


def test_redraws_at_most_once_per_min_interval():
    out, clock = Terminal(), FakeClock()
    progress = Progress(100, stream=out, clock=clock, min_interval=0.1)
    drawn = []
    for t in (0.05, 0.10, 0.15, 0.19, 0.20, 0.35, 0.36):
        clock.now = t
        progress.advance()
        drawn.append(len(frames(out)))
    # Nothing before 0.1 s, then one frame per 0.1 s at most.
    assert drawn == [0, 1, 1, 1, 2, 3, 3]


def test_the_example_line():
    out, clock = Terminal(), FakeClock()
    progress = Progress(20_022, stream=out, clock=clock)
    clock.now = 3 * 9_010 / 11_012  # a rate that leaves exactly 3 s for the 11,012 left
    progress.advance(9_010)
    assert frames(out) == [
        "gradproof  [#########           ]  45%  9,010/20,022 evaluations  ~3 s left"
    ]


@pytest.mark.parametrize(
    ("done", "total", "elapsed", "text"),
    [
        (100, 400, 1.0, "~3 s left"),
        (999, 1000, 1.0, "~1 s left"),  # under a second still says 1 s
        (100, 10_000, 1.0, "~2 min left"),  # 99 s
        (1, 3_901, 1.0, "~1 h 5 min left"),
        (1, 7_201, 1.0, "~2 h left"),
        (0, 100, 5.0, ""),  # nothing done yet: no estimate
        (100, 100, 5.0, ""),  # nothing left
        (5, 100, 0.0, ""),  # no time measured
    ],
)
def test_time_left(done, total, elapsed, text):
    assert time_left(done, total, elapsed) == text


def test_no_estimate_before_the_first_advance():
    progress = Progress(50, enabled=True, stream=io.StringIO(), clock=FakeClock())
    assert progress.render(10.0) == "gradproof  [                    ]  0%  0/50 evaluations"


def test_the_estimate_follows_the_rate():
    out, clock = Terminal(), FakeClock()
    progress = Progress(1_000, stream=out, clock=clock)
    clock.now = 1.0
    progress.advance(10)  # 10 per second, 990 left
    clock.now = 2.0
    progress.advance(490)  # 250 per second, 500 left
    assert [frame.rsplit("  ", 1)[1] for frame in frames(out)] == ["~2 min left", "~2 s left"]


def test_add_total_grows_the_plan():
    out, clock = Terminal(), FakeClock()
    progress = Progress(10, stream=out, clock=clock, min_interval=0)
    clock.now = 1.0
    progress.advance(10)
    progress.add_total(30)
    clock.now = 2.0
    progress.advance(10)
    assert (progress.done, progress.total) == (20, 40)
    assert frames(out)[-1] == "gradproof  [##########          ]  50%  20/40 evaluations  ~2 s left"


def test_a_shorter_line_blanks_out_the_longer_one_before_it():
    out, clock = Terminal(), FakeClock()
    progress = Progress(3_901, stream=out, clock=clock, min_interval=0)
    clock.now = 1.0
    progress.advance()  # ~1 h 5 min left
    clock.now = 1.0001
    progress.advance(3_800)  # "~1 s left": a shorter line
    first, second = out.getvalue().split("\r")[1:]
    assert len(second) == len(first) and second.endswith(" ")


def test_close_ends_a_drawn_line_once():
    out, clock = Terminal(), FakeClock()
    with Progress(10, stream=out, clock=clock) as progress:
        clock.now = 1.0
        progress.advance(4)
    progress.close()  # idempotent
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    # The final frame shows the count, without an estimate.
    assert frames(out)[-1] == "gradproof  [########            ]  40%  4/10 evaluations"


def test_close_writes_nothing_when_nothing_was_drawn():
    out, clock = Terminal(), FakeClock()
    with Progress(10, stream=out, clock=clock) as progress:
        clock.now = 0.05  # too soon to draw
        progress.advance(10)
    assert out.getvalue() == ""


def test_after_close_advance_only_counts():
    out, clock = Terminal(), FakeClock()
    progress = Progress(10, stream=out, clock=clock, min_interval=0)
    progress.close()
    clock.now = 5.0
    progress.advance(3)
    assert out.getvalue() == "" and progress.done == 3


def test_custom_label():
    out = io.StringIO()
    Progress(2, stream=out, enabled=True, label="check W1", min_interval=0).advance()
    assert frames(out)[0].startswith("check W1  [")
