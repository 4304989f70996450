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
    assert b'"id":121,' in body and b'"n":3' in body and b'"neg":-7' in body
    assert b'"score":0.25' in body
    assert json.loads(body)["big"] == 2.0**60  # beyond 2^53 stays a double
