"""A number given as text (path, query, or a string in a JSON body) is the ASCII
proto3 JSON spelling, nothing Python's int()/float() also take.

json_format parses those strings with int()/float(), which accept `1_000`,
`1\\n`, a tab, and other scripts' digits (U+0663, fullwidth U+FF11): `?revision=1_0`
was revision 10 and `{"int64Value": "\\u0663"}` was 3, values a proxy or WAF in front
would not read as these numbers. Each is 400 naming the field now."""

from __future__ import annotations

import aiohttp
import pytest
from yarl import URL

ODD = ["1_0", "1\n", "\t1", "1 ", "\u0663", "\uff11", "0x10", "1e", "--1", ""]


@pytest.mark.parametrize("text", ODD)
async def test_an_odd_number_in_the_query_is_refused(
    gateway: str, http: aiohttp.ClientSession, text: str
) -> None:
    url = URL(gateway + "/v1/messages/m1").with_query(revision=text)
    async with http.get(url) as response:
        body = await response.json()
        assert response.status == 400, (text, body)
        assert "revision" in body["message"], body


@pytest.mark.parametrize("text", ODD)
@pytest.mark.parametrize("field", ["int64Value", "uint64Value", "doubleValue", "numbers"])
async def test_an_odd_number_string_in_a_body_is_refused(
    gateway: str, http: aiohttp.ClientSession, text: str, field: str
) -> None:
    value: object = [text] if field == "numbers" else text
    async with http.post(gateway + "/v1/echo", json={field: value}) as response:
        body = await response.json()
        assert response.status == 400, (text, field, body)
        assert field in body["message"] or "int64_value" in body["message"], body


@pytest.mark.parametrize(
    ("text", "shown"), [("10", "10"), ("-3", "-3"), ("+4", "4"), ("1e3", "1000")]
)
async def test_plain_numbers_as_text_still_parse(
    gateway: str, http: aiohttp.ClientSession, text: str, shown: str
) -> None:
    url = URL(gateway + "/v1/messages/m1").with_query(revision=text)
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        assert f"revision: {shown}" in (await response.json())["requestText"]
    async with http.post(gateway + "/v1/echo", json={"int64Value": text}) as response:
        assert response.status == 200, await response.text()
    async with http.post(gateway + "/v1/echo", json={"doubleValue": "NaN"}) as response:
        assert response.status == 200, await response.text()
