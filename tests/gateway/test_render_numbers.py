"""Doubles print as protojson prints them: integral values without a fraction."""

from __future__ import annotations

import json

from google.protobuf import struct_pb2

from kaireon_server.gateway.render import dumps


def test_integral_doubles_print_as_integers() -> None:
    value = struct_pb2.Struct()
    value.update({"id": 121, "score": 0.25, "nested": [{"n": 3}], "big": 2.0**60, "neg": -7})
    from google.protobuf import json_format

    body = dumps(json_format.MessageToDict(value))
    decoded = json.loads(body)
    assert b"121.0" not in body and b"3.0" not in body and b"-7.0" not in body
    assert type(decoded["id"]) is int and decoded["id"] == 121
    assert type(decoded["nested"][0]["n"]) is int and type(decoded["neg"]) is int
    assert decoded["score"] == 0.25
    assert type(decoded["big"]) is float  # beyond 2^53 stays a double
