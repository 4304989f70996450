"""PII redaction: detectors and key names (unit), and the property over the real RPC."""

from __future__ import annotations

import copy
import ipaddress
import itertools
import string
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaireon_server.platform.canonical import canonical_json
from kaireon_server.provenance.redaction import (
    iban_valid,
    key_type,
    luhn_valid,
    redact,
    redact_text,
)
from tests.provenance.conftest import fetch

# --- checksums ----------------------------------------------------------------


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")


def test_iban_mod_97():
    assert iban_valid("GB82WEST12345698765432")
    assert iban_valid("DE89370400440532013000")
    assert not iban_valid("GB82WEST12345698765433")
    assert not iban_valid("GB82WEST1234")  # too short


# --- detectors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jo.smith+x@mail.example.co.uk now", "write to [REDACTED:email] now"),
        ("call +33 6 12 34 56 78 today", "call [REDACTED:phone] today"),
        ("call 0033 6 12 34 56 78", "call [REDACTED:phone]"),
        ("06 12 34 56 78", "[REDACTED:phone]"),
        ("(030) 1234 5678", "[REDACTED:phone]"),
        ("US (555) 123-4567.", "US [REDACTED:phone]."),
        ("pay DE89 3704 0044 0532 0130 00 ASAP", "pay [REDACTED:iban] ASAP"),
        ("GB82WEST12345698765432", "[REDACTED:iban]"),
        ("card 4111-1111-1111-1111 exp 2029", "card [REDACTED:card_number] exp 2029"),
        ("amex 3782 822463 10005", "amex [REDACTED:card_number]"),
        ("from 192.0.2.44:8080", "from [REDACTED:ip_address]:8080"),
        ("v6 2001:db8::8a2e:370:7334 up", "v6 [REDACTED:ip_address] up"),
        ("mapped ::ffff:192.0.2.1", "mapped [REDACTED:ip_address]"),
        ("glued cafe2001:db8::1", "glued cafe[REDACTED:ip_address]"),
    ],
)
def test_detectors_replace_with_typed_markers(text, expected):
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-01T10:00:00.123456Z",
        "2026-03-01 10:00:00+02:00",
        "at 10:00:00.000000",
        "score 0.123456789",
        "version 1.2",
        "order 4111111111111112",  # fails Luhn
        "ref GB82WEST12345698765433",  # fails mod-97
        "12 items",
        "OFFER_A",
    ],
)
def test_non_personal_text_is_kept(text):
    assert redact_text(text) == text


def test_key_names_ignore_case_and_punctuation():
    assert key_type("E-Mail") == "email"
    assert key_type("date_of_birth") == "birth_date"
    assert key_type("IPAddress") == "ip_address"
    assert key_type("customerId") == "customer_id"
    assert key_type("segment") is None


def test_values_under_personal_keys_go_whole_and_known_values_everywhere():
    trace = {
        "customer": {
            "fullName": "Ines Novak",
            "address": {"street": "12 Via Roma", "city": "Roma"},
            "DOB": "1980-02-03",
        },
        "notes": ["Ines said hi", "NOVAK again", "born 1980-02-03"],
    }
    original = copy.deepcopy(trace)
    redacted = redact(trace)
    assert trace == original  # a copy is returned
    assert redacted["customer"] == {
        "DOB": "[REDACTED:birth_date]",
        "address": "[REDACTED:address]",
        "fullName": "[REDACTED:name]",
    }
    assert redacted["notes"] == [
        "[REDACTED:name] said hi",
        "[REDACTED:name] again",
        "born [REDACTED:birth_date]",
    ]


def test_personal_data_in_keys_is_replaced_and_collisions_numbered():
    redacted = redact({"a@x.org": 1, "b@x.org": 2, "+33 6 12 34 56 78": {"n": 4111111111111111}})
    assert redacted == {
        "[REDACTED:email]": 1,
        "[REDACTED:email]#2": 2,
        "[REDACTED:phone]": {"n": "[REDACTED:card_number]"},
    }


def test_markers_are_not_hashes():
    # Two different e-mails give the same marker: nothing to reverse by guessing.
    assert redact_text("a@x.org") == redact_text("b@y.org") == "[REDACTED:email]"


# --- property: planted PII never reaches the bundle bytes --------------------------

WORD = st.from_regex(r"[g-z]{3,8}", fullmatch=True)
# Values under personal keys may be anything; this prefix keeps them distinctive.
OPAQUE = st.from_regex(r"Zq[g-z]{6,10}( [g-z]{4,8})?", fullmatch=True)


@st.composite
def emails(draw):
    local = draw(st.from_regex(r"[a-z][a-z0-9._\-]{1,12}[a-z0-9]", fullmatch=True))
    labels = draw(
        st.lists(
            st.from_regex(r"[a-z][a-z0-9\-]{0,8}[a-z]", fullmatch=True), min_size=1, max_size=3
        )
    )
    tld = draw(st.sampled_from(["com", "org", "io", "example", "fr"]))
    return f"{local}@{'.'.join(labels)}.{tld}"


def _digits(draw, count):
    return "".join(draw(st.lists(st.sampled_from(string.digits), min_size=count, max_size=count)))


@st.composite
def phones(draw):
    style = draw(st.sampled_from(["intl", "intl00", "national", "nanp"]))
    if style in ("intl", "intl00"):
        cc = draw(st.sampled_from(["1", "33", "39", "44", "49", "351", "420"]))
        groups = [_digits(draw, draw(st.integers(2, 3))) for _ in range(draw(st.integers(3, 4)))]
        prefix = "+" if style == "intl" else "00"
        return f"{prefix}{cc} {draw(st.sampled_from(string.digits[1:]))}" + "".join(
            draw(st.sampled_from([" ", "-", "."])) + g for g in groups
        )
    if style == "national":
        sep = draw(st.sampled_from([" ", ".", "-", ""]))
        return (
            "0"
            + draw(st.sampled_from("1234679"))
            + "".join(sep + _digits(draw, 2) for _ in range(4))
        )
    area = draw(st.sampled_from("23456789")) + _digits(draw, 2)
    return f"({area}) {_digits(draw, 3)}-{_digits(draw, 4)}"


def _luhn_complete(body: str) -> str:
    return next(body + d for d in string.digits if luhn_valid(body + d))


@st.composite
def cards(draw):
    length = draw(st.sampled_from([15, 16, 19]))
    number = _luhn_complete(draw(st.sampled_from("3456")) + _digits(draw, length - 2))
    sep = draw(st.sampled_from(["", " ", "-"]))
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


@st.composite
def ibans(draw):
    country = draw(st.sampled_from(["DE", "FR", "GB", "IT", "NL", "ES"]))
    bban = draw(st.from_regex(r"[A-Z0-9]{12,26}", fullmatch=True))
    check = next(f"{c:02d}" for c in range(2, 99) if iban_valid(f"{country}{c:02d}{bban}"))
    compact = f"{country}{check}{bban}"
    if draw(st.booleans()):
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


ips = st.one_of(
    st.integers(1, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
    st.integers(2**100, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
    st.integers(2**100, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n).exploded),
)
DETECTABLE = st.one_of(emails(), phones(), cards(), ibans(), ips)
PERSONAL_KEYS = st.sampled_from(
    ["name", "lastName", "email", "phone", "address", "birthDate", "ssn", "iban", "ip"]
)


@st.composite
def planted_traces(draw):
    """A trace with PII planted as values, keys, free text and under personal keys."""
    secrets: list[str] = []

    def plant_value():
        pii = draw(DETECTABLE)
        secrets.append(pii)
        how = draw(st.sampled_from(["bare", "text", "text"]))
        if how == "bare":
            return pii
        sep = draw(st.sampled_from([" ", ", ", " (", ": "]))
        return f"{draw(WORD)}{sep}{pii} {draw(WORD)}"

    def subtree(depth):
        node = {}
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["leaf", "pii", "pii_key", "personal", "list", "nest"]))
            # Unique keys: an overwritten entry would leave a stale secret in the list.
            key = f"{draw(WORD)}{len(secrets)}k{len(node)}"
            if kind == "leaf":
                node[key] = draw(st.one_of(st.integers(-1000, 1000), st.booleans(), WORD))
            elif kind == "pii":
                node[key] = plant_value()
            elif kind == "pii_key":
                pii = draw(DETECTABLE)
                secrets.append(pii)
                node[pii] = draw(WORD)
            elif kind == "personal":
                value = draw(OPAQUE)
                personal_key = draw(PERSONAL_KEYS)
                if personal_key in node:
                    continue
                secrets.append(value)
                node[personal_key] = value if draw(st.booleans()) else {key: value}
                if draw(st.booleans()):
                    # The same value repeated in free text elsewhere.
                    node[key + "note"] = f"{draw(WORD)} {value} {draw(WORD)}"
            elif kind == "list":
                node[key] = [plant_value(), draw(WORD)]
            elif depth < 3:
                node[key] = subtree(depth + 1)
        return node

    attributes = subtree(0)
    candidates = [{"offerId": "OFFER_A", "score": 0.5, "selected": True, "why": plant_value()}]
    results = [
        {"offerId": "OFFER_A", "ruleId": "rule_offer_a", "passed": True, "detail": plant_value()}
    ]
    channel = plant_value() if draw(st.booleans()) else "email"
    return {
        "attributes": attributes,
        "candidates": candidates,
        "qualification_results": results,
        "channel": channel,
    }, secrets


def _assert_absent(secrets, text):
    for secret in secrets:
        assert secret not in text
        compact = "".join(ch for ch in secret if ch.isalnum())
        if len(compact) >= 12 and compact.isdigit():
            assert compact not in text  # a card number without its separators


@settings(max_examples=200, deadline=None)
@given(planted=planted_traces())
def test_redactor_removes_planted_pii(planted):
    """The redactor alone, many examples (fast); the next test runs the real RPC."""
    trace, secrets = planted
    _assert_absent(secrets, canonical_json(redact(trace)).decode())


_counter = itertools.count()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(planted=planted_traces())
async def test_planted_pii_never_appears_in_the_bundle(channel, seeded, db, planted):
    trace, secrets = planted
    decision_id = f"dec_prop_{next(_counter)}"
    async with db.transaction(seeded) as con:
        await con.execute(
            "INSERT INTO decision_trace (tenant_id, id, customer_id, decided_at, channel, "
            "selected_offer_id, candidates, models, qualification_results, attributes) "
            "VALUES ($1, $2, 'cust_secret_42', $3, $4, 'OFFER_A', $5, "
            '\'[{"modelId": "model_uplift", "version": 2}]\', $6, $7)',
            seeded,
            decision_id,
            datetime(2026, 4, 1, tzinfo=UTC),
            trace["channel"],
            trace["candidates"],
            trace["qualification_results"],
            trace["attributes"],
        )
    body = (await fetch(channel, seeded, decision_id)).body.decode()
    assert "cust_secret_42" not in body
    _assert_absent(secrets, body)
