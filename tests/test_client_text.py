"""What the CLI client prints of text a pusher wrote: never an escape sequence a terminal would obey,
a log's colours kept where colour is wanted; and times as a person reads them."""

from __future__ import annotations

from datetime import UTC, datetime

from ciserver.client_text import age, duration, field, log_text, span

OSC_52 = "\x1b]52;c;cm0gLXJmIH4=\x07"  # writes the clipboard
TITLE = "\x1b]0;owned\x1b\\"
CLEAR = "\x1b[2J\x1b[H"


def test_a_field_is_one_line_of_printable_text() -> None:
    assert field(f"main{OSC_52}{TITLE}{CLEAR}") == "main"
    assert field("feature/\u202eevil") == "feature/?evil"  # a bidirectional override shown, not obeyed
    assert field("a\nb\tc\x07d\x9b31m") == "a b c?d"
    assert field("[bold red]not markup[/]") == "[bold red]not markup[/]"
    assert field("x" * 300, 10) == "x" * 9 + "…"
    assert field(None) == ""


def test_a_log_keeps_its_colours_and_lines_but_no_other_escape() -> None:
    chunk = f"\x1b[31mred\x1b[0m {OSC_52}{TITLE}{CLEAR}done\r\n\tnext\x00\x08"
    assert log_text(chunk, colour=True) == "\x1b[31mred\x1b[0m done\r\n\tnext"
    assert log_text(chunk, colour=False) == "red done\r\n\tnext"
    assert log_text("\x1b", colour=True) == ""


def test_times_read_at_a_glance() -> None:
    assert [span(s) for s in (0.42, 9.96, 42, 185, 7800, 4 * 86400)] == [
        "0.4s",
        "10.0s",
        "42s",
        "3m05s",
        "2h10m",
        "4d",
    ]
    now = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
    assert age("2026-12-07T11:58:00+00:00", now) == "2m00s"
    assert age("2026-12-07T11:59:30", now) == "30s"  # naive times are the server's UTC
    assert age(None, now) == "-"
    assert duration("2026-12-07T11:59:00+00:00", "2026-12-07T11:59:01.5+00:00") == "1.5s"
    assert duration("2026-12-07T11:59:00+00:00", None, now) == "1m00s"  # still running
    assert duration(None, None) == "-"
