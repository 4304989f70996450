"""The fast canonicaliser gives exactly the reference implementation's bytes (or error)."""

from __future__ import annotations

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from kaireon_client.jcs import canonical_json, canonical_object

SAFE_INT = 2**53 - 1
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-SAFE_INT, SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=500, deadline=None)
@given(value=values)
def test_same_bytes_as_rfc8785(value):
    assert canonical_json(value) == rfc8785.dumps(value)


@settings(max_examples=300, deadline=None)
@given(members=st.dictionaries(st.text(), values, max_size=6))
def test_an_object_composed_from_canonical_members_is_canonical(members):
    """What bundle.encode_rows relies on: members canonicalised apart, then joined."""
    composed = canonical_object({k: canonical_json(v) for k, v in members.items()})
    assert composed == rfc8785.dumps(members)


@pytest.mark.parametrize(
    "value",
    [
        {"\U0001f600": 1, "\ufb33": 2, "a": 3},  # UTF-16 order differs from code point order
        {"s": 'tab\tnl\nnul-free \x1f \x7f \u2028 é 😀 "q" \\'},
        [1e21, 1e-7, -0.0, 0.1, 123456789.125, 5e-324, 1.7976931348623157e308],
        {"k": "\x00nul"},  # placeholders use NUL: falls back to the reference
        [2**53 - 1, -(2**53) + 1],
        ("tuple", 1),
    ],
)
def test_edge_cases(value):
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value", [2**53, float("nan"), {1: "non-string key"}, "\ud800", {"x": object()}]
)
def test_errors_are_the_references(value):
    with pytest.raises(rfc8785.CanonicalizationError):
        rfc8785.dumps(value)
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_json(value)


@settings(max_examples=1000, deadline=None)
@given(
    value=st.lists(
        st.floats(min_value=1e-4, max_value=1e16, exclude_max=True)
        | st.floats(min_value=-1e16, max_value=-1e-4, exclude_min=True),
        min_size=1,
        max_size=4,
    )
)
def test_floats_on_the_c_encoder_path_match(value):
    # The range where Python's repr is taken as the ECMAScript form.
    assert canonical_json({"scores": value}) == rfc8785.dumps({"scores": value})
