from app import VERSION, answer


def test_the_root_answers_the_version() -> None:
    assert answer("/", failing=False) == (200, f"hello {VERSION}\n")


def test_healthz_answers_even_when_failing() -> None:
    assert answer("/healthz", failing=True) == (200, "ok\n")
    assert answer("/", failing=True)[0] == 500
