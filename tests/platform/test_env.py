"""platform/env.py: one set of rules for every setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaireon_server.platform.env import ConfigurationError, EnvReader, process_environment


def reader(**values: str) -> EnvReader:
    return EnvReader(values)


def test_unset_empty_and_blank_mean_default() -> None:
    for env in (reader(), reader(X=""), reader(X="  \t")):
        assert env.integer("X", 7) == 7
        assert env.boolean("X", True) is True
        assert env.number("X", 1.5) == 1.5
        assert env.text("X", "d") == "d"
        assert env.path("X") is None
        assert env.csv("X", ("a",)) == ("a",)


def test_values_are_stripped_then_parsed() -> None:
    env = reader(I=" 5 ", B=" Yes\n", F="\t2.5 ", T="  name ", C=" a, b ,c ")
    assert env.integer("I", 0) == 5
    assert env.boolean("B", False) is True
    assert env.number("F", 0.0) == 2.5
    assert env.text("T", "") == "name"
    assert env.csv("C", ()) == ("a", "b", "c")


@pytest.mark.parametrize("raw", ["1.0", "0x10", "ten", "1_000", "²"])
def test_integers_are_plain_decimal(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="X must be an integer"):
        reader(X=raw).integer("X", 0)


def test_bounds_name_the_variable_and_range() -> None:
    with pytest.raises(ConfigurationError, match=r"X must be between 1 and 64, got 65"):
        reader(X="65").integer("X", 1, minimum=1, maximum=64)
    with pytest.raises(ConfigurationError, match=r"X must be >= 1, got 0"):
        reader(X="0").integer("X", 1, minimum=1)
    with pytest.raises(ConfigurationError, match=r"X must be > 0, got 0"):
        reader(X="0").number("X", 1.0, exclusive_minimum=0.0)


@pytest.mark.parametrize("raw", ["1_000", "\u0663", "\uff11.5", "1e", "0x10", "2.5s", "--1"])
def test_numbers_are_plain_decimal(raw: str) -> None:
    # float() takes the first three (1000, 3, 1.5): not what an operator reading
    # the value, or any other tool, takes it for.
    with pytest.raises(ConfigurationError, match="X must be a number"):
        reader(X=raw).number("X", 0.0)


@pytest.mark.parametrize(("raw", "value"), [("2", 2.0), ("+.5", 0.5), ("1e3", 1000.0), ("3.", 3.0)])
def test_plain_numbers_parse(raw: str, value: float) -> None:
    assert reader(X=raw).number("X", 0.0) == value


@pytest.mark.parametrize("raw", ["nan", "inf", "-Infinity", "1e400"])
def test_numbers_must_be_finite(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="finite"):
        reader(X=raw).number("X", 1.0)


@pytest.mark.parametrize("raw", ["maybe", "2", "tru"])
def test_booleans_are_one_of_the_known_words(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="X must be true or false"):
        reader(X=raw).boolean("X", False)


def test_seconds_or_none() -> None:
    assert reader(X="0").seconds_or_none("X", 3.0) is None
    assert reader(X="none").seconds_or_none("X", 3.0) is None
    assert reader(X="2.5").seconds_or_none("X", None) == 2.5
    with pytest.raises(ConfigurationError):
        reader(X="-1").seconds_or_none("X", None)


def test_ports_choices_paths_and_csv() -> None:
    assert reader(P="8080").port("P", 1) == 8080
    with pytest.raises(ConfigurationError):
        reader(P="65536").port("P", 1)
    with pytest.raises(ConfigurationError):
        reader(P="0").port("P", 1)
    assert reader(P="0").port("P", 1, allow_zero=True) == 0
    assert reader(M="b").choice("M", "a", ("a", "b")) == "b"
    with pytest.raises(ConfigurationError, match="one of a, b"):
        reader(M="c").choice("M", "a", ("a", "b"))
    assert reader(D="/tmp/x").path("D") == Path("/tmp/x")
    with pytest.raises(ConfigurationError, match="empty item"):
        reader(C="a,,b").csv("C", ())


def test_secrets_are_never_echoed() -> None:
    env = reader(S="  s3cr3t-value ")
    assert env.secret("S") == "  s3cr3t-value "
    assert reader(S="   ").secret("S") is None


def test_listen_port_off_auto_and_numbers() -> None:
    for word in ("off", "OFF", " none ", "disabled"):
        assert reader(P=word).listen_port("P", 8080, zero_is_off=True) is None
        assert reader(P=word).listen_port("P", 8080, zero_is_off=False) is None
    assert reader(P="auto").listen_port("P", 8080, zero_is_off=True) == 0
    assert reader().listen_port("P", 8080, zero_is_off=True) == 8080
    assert reader(P=" 9090 ").listen_port("P", 8080, zero_is_off=True) == 9090
    # The server documents 0 as "off", the standalone gateway as "any free port".
    assert reader(P="0").listen_port("P", 8080, zero_is_off=True) is None
    assert reader(P="0").listen_port("P", 8080, zero_is_off=False) == 0


@pytest.mark.parametrize("raw", ["70000", "-1", "http", "80.5"])
def test_listen_port_refuses_what_is_not_a_port(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="P must be"):
        reader(P=raw).listen_port("P", 8080, zero_is_off=False)


def test_process_environment_is_a_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIREON_ENV_TEST_SNAPSHOT", "1")
    snapshot = process_environment()
    monkeypatch.setenv("KAIREON_ENV_TEST_SNAPSHOT", "2")
    assert snapshot["KAIREON_ENV_TEST_SNAPSHOT"] == "1"
