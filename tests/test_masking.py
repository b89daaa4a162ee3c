"""Secret values never show in a job's output, however the output is cut into chunks."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from ciserver.masking import Masker, mask_text

TOKEN = "ghp_s3cr3tT0kenValue"


def run(values: list[str], chunks: list[bytes]) -> bytes:
    masker = Masker(values)
    return b"".join(masker.feed(c) for c in chunks) + masker.flush()


def test_a_value_split_anywhere_between_two_chunks_is_masked() -> None:
    line = f"export TOKEN={TOKEN} # done\n".encode()
    for cut in range(len(line) + 1):
        assert run([TOKEN], [line[:cut], line[cut:]]) == b"export TOKEN=[masked] # done\n", cut


def test_a_value_fed_one_byte_at_a_time_is_masked() -> None:
    data = f"a {TOKEN} b {TOKEN}{TOKEN}\n".encode()
    assert run([TOKEN], [bytes([b]) for b in data]) == b"a [masked] b [masked][masked]\n"


def test_overlapping_values_are_masked_together_leaving_no_part_of_either() -> None:
    out = run(["password-one", "one-two-three"], [b"x password-one-two-three y\n"])
    assert out == b"x [masked] y\n"
    out = run(["deploy-key", "deploy-key-prod"], [b"deploy-key-prod and deploy-key\n"])
    assert out == b"[masked] and [masked]\n", "the longer value wins, not a leftover -prod"


def test_a_value_at_the_very_end_is_held_back_then_masked_by_flush() -> None:
    masker = Masker([TOKEN])
    shown = masker.feed(f"last words: {TOKEN[:-1]}".encode())
    assert shown == b"last words: ", "the start of a possible value waits"
    assert masker.feed(TOKEN[-1:].encode()) + masker.flush() == b"[masked]"


def test_a_held_back_prefix_that_is_no_value_comes_out_unchanged() -> None:
    masker = Masker([TOKEN])
    assert masker.feed(b"ghp_s3cr") == b""
    assert masker.feed(b"et") == b"ghp_s3cret"
    assert masker.feed(b"ghp") + masker.flush() == b"ghp"


def test_a_multi_line_value_is_masked_whole_and_line_by_line() -> None:
    key = "-----BEGIN KEY-----\nMIIEowIBAAKCAQEA\nabc\n-----END KEY-----"
    assert run([key], [f"{key}\n".encode()]) == b"[masked]\n"
    # A tty turns the newlines into CRLF: each long enough line is still hidden.
    tty = key.replace("\n", "\r\n").encode() + b"\r\n"
    assert run([key], [tty]) == b"[masked]\r\n[masked]\r\nabc\r\n[masked]\r\n"
    assert run([key], [b"MIIEowIBAAKCAQEA alone\n"]) == b"[masked] alone\n"


def test_ordinary_output_passes_byte_for_byte_and_whole_lines_are_not_delayed() -> None:
    masker = Masker([TOKEN])
    data = "naïve ünïcödé\r\n\x1b[31mred\x1b[0m ghp_ but no token\n".encode() + bytes(range(256))
    assert masker.feed(data) + masker.flush() == data
    assert masker.feed(b"step 1 done\n") == b"step 1 done\n"


def test_no_values_means_no_change_and_no_holding_back() -> None:
    masker = Masker([])
    assert masker.feed(b"abc") == b"abc"
    assert masker.flush() == b""


def test_mask_text_hides_values_in_a_message() -> None:
    assert mask_text(f"login failed for {TOKEN}", [TOKEN]) == "login failed for [masked]"


@st.composite
def output_with_values(draw: st.DrawFn) -> tuple[list[str], bytes, list[int]]:
    # An alphabet without the letters of "[masked]", so a mask never spells part of a value.
    values = draw(st.lists(st.text("xyz\n", min_size=1, max_size=12), min_size=1, max_size=3))
    pieces = draw(st.lists(st.one_of(st.sampled_from(values), st.text("xyz\n", max_size=6)), max_size=12))
    data = "".join(pieces).encode()
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=8))
    return values, data, sorted(cuts)


@settings(max_examples=400, deadline=None)
@given(output_with_values())
def test_no_chunking_ever_lets_a_value_through(case: tuple[list[str], bytes, list[int]]) -> None:
    values, data, cuts = case
    bounds = [0, *cuts, len(data)]
    out = run(values, [data[a:b] for a, b in pairwise(bounds)])
    for value in values:
        whole = value.strip("\n").encode()
        assert not whole or whole not in out
    assert out == run(values, [data]), "the chunking does not change the output"
