"""Input the gateway refuses before any gRPC call, naming the field.

Duplicate keys and numbers no double can carry are refused in both modes; the
default (strict) mode also refuses unknown fields. Sent as raw bytes: Python's
JSON encoder cannot even write duplicate keys.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

MODES = ("gateway", "lenient_gateway")


async def _post(http: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    async with http.post(url, data=body, headers=headers) as response:
        return response.status, await response.json()


@pytest.fixture(params=MODES)
def base(request: pytest.FixtureRequest) -> str:
    url = request.getfixturevalue(request.param)
    assert isinstance(url, str)
    return url


BOTH_MODES: dict[str, tuple[bytes, str]] = {
    # body -> what the 400's message says
    "duplicate_key": (b'{"name": "a", "name": "b"}', "duplicate key 'name'"),
    "duplicate_nested": (b'{"nested": {"label": "a", "label": "b"}}', "duplicate key 'label'"),
    "duplicate_in_struct": (b'{"attrs": {"k": 1, "k": 2}}', "duplicate key 'k'"),
    "duplicate_in_map": (b'{"labels": {"a": "x", "a": "y"}}', "duplicate key 'a'"),
    "json_and_proto_name": (
        b'{"int32Value": 1, "int32_value": 2}',
        "int32_value: given twice, as 'int32Value' and 'int32_value'",
    ),
    "json_and_proto_name_nested": (
        b'{"nested": {"child": {"label": "a"}}, "nestedList": [{"label": "x", "label": "y"}]}',
        "duplicate key 'label'",
    ),
    "renamed_and_proto_name": (
        b'{"renamed": "a", "custom_json": "b"}',
        "custom_json: given twice, as 'renamed' and 'custom_json'",
    ),
    "nan_literal": (b'{"doubleValue": NaN}', "doubleValue: not a finite number"),
    "infinity_literal": (b'{"attrs": {"x": -Infinity}}', "attrs.x: not a finite number"),
    "overflowing_double": (b'{"doubleValue": 1e400}', "doubleValue: not a finite number"),
    "overflow_nested_in_struct": (
        b'{"attrs": {"a": [1, {"b": 1e400}]}}',
        "attrs.a[1].b: not a finite number",
    ),
    "overflow_in_value": (b'{"anyValue": [-1e999]}', "anyValue[0]: not a finite number"),
    "integer_beyond_a_double": (
        b'{"attrs": {"n": 1' + b"0" * 400 + b"}}",
        "attrs.n: not a finite number",
    ),
    # Rounds up to 2**1024: no double holds it, though it is below 2**1024.
    "integer_just_past_a_double": (
        b'{"attrs": {"n": %d}}' % (2**1024 - 2**970),
        "attrs.n: not a finite number",
    ),
    "odd_key_not_echoed": (b'{"attrs": {"x y\\n": NaN}}', "attrs[?]: not a finite number"),
    "int64_string_out_of_range": (b'{"int64Value": "9223372036854775808"}', "int64Value"),
    "int64_number_out_of_range": (b'{"int64Value": 1e30}', "int64Value"),
    "int32_out_of_range": (b'{"int32Value": 2147483648}', "int32Value"),
}


@pytest.mark.parametrize("case", sorted(BOTH_MODES))
async def test_duplicates_and_non_finite_numbers_are_400_in_both_modes(
    base: str, http: aiohttp.ClientSession, case: str
) -> None:
    body, message = BOTH_MODES[case]
    status, payload = await _post(http, base + "/v1/echo", body)
    assert status == 400, payload
    assert payload["code"] == 3 and payload["details"] == []
    assert message in payload["message"], payload["message"]


async def test_a_huge_duplicate_key_is_not_echoed_whole(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    key = "k" * 30_000  # two of them stay below the fixture's 64 KiB body limit
    status, payload = await _post(
        http, gateway + "/v1/echo", f'{{"attrs": {{"{key}": 1, "{key}": 2}}}}'.encode()
    )
    assert status == 400
    assert "duplicate key 'kkkk" in payload["message"] and len(payload["message"]) < 200


async def test_unknown_fields_are_named_by_path_in_strict_mode(
    gateway: str, lenient_gateway: str, http: aiohttp.ClientSession
) -> None:
    body = b'{"nested": {"child": {"bogus": 1}}}'
    status, payload = await _post(http, gateway + "/v1/echo", body)
    assert status == 400
    assert payload["message"].startswith("nested.child.bogus: unknown field 'bogus'")
    status, payload = await _post(http, lenient_gateway + "/v1/echo", body)
    assert status == 200 and payload["nested"]["child"] == {"label": "", "count": "0", "tags": []}


async def test_finite_numbers_at_the_edges_pass(base: str, http: aiohttp.ClientSession) -> None:
    body = (
        b'{"doubleValue": 1.7976931348623157e308, "attrs": {"tiny": 5e-324, "neg": -0.0,'
        b' "big": 1'
        + b"0" * 300
        + b', "list": [1e300, -1e300], "max": %d}, "int64Value": "-9223372036854775808"}'
        % (2**1024 - 2**971)  # the largest integer that still rounds to a double
    )
    status, payload = await _post(http, base + "/v1/echo", body)
    assert status == 200, payload
    assert payload["doubleValue"] == 1.7976931348623157e308
    assert payload["attrs"]["big"] == 1e300 and payload["attrs"]["list"] == [1e300, -1e300]
    assert payload["int64Value"] == "-9223372036854775808"
    assert payload["attrs"]["max"] == 1.7976931348623157e308
