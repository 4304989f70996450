"""platform/input_checks: the non-finite number walk and its byte filter, in-process.

(The same checks through a real server: tests/security/test_strict_input.py.)
"""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2

from kaireon.erasure.v1 import erasure_pb2
from kaireon.flow.v1 import flow_pb2
from kaireon_server.platform.errors import InvalidArgument
from kaireon_server.platform.input_checks import check_request, find_non_finite

NON_FINITE = [float("nan"), float("inf"), float("-inf")]


def _run(config: dict[str, object]) -> flow_pb2.StartRunRequest:
    request = flow_pb2.StartRunRequest()
    request.definition.nodes.add(id="a").config.update(config)
    request.definition.nodes.add(id="b")
    return request


@pytest.mark.parametrize("value", NON_FINITE)
def test_non_finite_struct_numbers_are_named_by_json_path(value: float) -> None:
    cases = {
        "definition.nodes[0].config.n": {"n": value},
        "definition.nodes[0].config.a[2].b": {"a": [1, "x", {"b": value}]},
        "definition.nodes[0].config.a[0][0]": {"a": [[value]]},
        # Keys that are not field-like are never echoed.
        "definition.nodes[0].config[?]": {"a key\n": value},
    }
    for where, config in cases.items():
        request = _run(config)
        assert find_non_finite(request) == where
        with pytest.raises(InvalidArgument) as caught:
            check_request(request)
        assert caught.value.metadata == {"field": where}
        assert caught.value.reason == "NON_FINITE_NUMBER"


@pytest.mark.parametrize("value", NON_FINITE)
def test_non_finite_double_fields_are_refused(value: float) -> None:
    request = flow_pb2.StartRunRequest()
    request.definition.nodes.add(id="a")
    request.definition.nodes.add(id="b").retry.backoff_multiplier = value
    with pytest.raises(InvalidArgument) as caught:
        check_request(request)
    assert caught.value.metadata == {"field": "definition.nodes[1].retry.backoff_multiplier"}
    # A bare Value / ListValue request part is walked too.
    value_message = struct_pb2.Value(list_value=struct_pb2.ListValue())
    value_message.list_value.values.add().number_value = value
    assert find_non_finite(value_message) == "[0]"


def test_finite_numbers_and_float_free_requests_pass() -> None:
    check_request(_run({"n": 1.7976931348623157e308, "m": -5e-324, "z": -0.0, "l": [1e300]}))
    check_request(erasure_pb2.EraseCustomerRequest(customer_id="c", dry_run=True))
    # Bytes that look like a non-finite double (the filter matches) but are text.
    check_request(_run({"s": "\u00ff\u007f" * 3, "n": -1}))
