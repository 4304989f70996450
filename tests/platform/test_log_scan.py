"""The end-of-session log scan (tests/conftest.py) finds what it looks for."""

from __future__ import annotations

import logging

from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from tests.support.log_scan import CollectingHandler, findings, secret_fragments
from tests.support.server import JWT_SECRET, metadata


def test_scanner_finds_planted_pii_and_key_material(signing_key_path) -> None:
    key_line = signing_key_path.read_text().splitlines()[1]
    lines = [
        '{"msg": "ok", "method": "/kaireon.erasure.v1.ErasureService/EraseCustomer"}',
        '{"msg": "leak", "customer": "cust_00042"}',
        '{"msg": "leak", "to": "alice.moreau7@example.com"}',
        '{"msg": "leak", "phone": "+33 6 12 34 56 78"}',
        f'{{"msg": "leak", "key": "{key_line}"}}',
        f'{{"msg": "leak", "secret": "{JWT_SECRET}"}}',
    ]
    found = findings(lines, secret_fragments([signing_key_path], [JWT_SECRET]))
    kinds = sorted(f.split(":")[0] for f in found)
    assert kinds == ["customer id", "email", "key material", "key material", "phone"]


async def test_a_rejected_erasure_logs_no_customer_id(channel, tenant) -> None:
    handler = CollectingHandler()
    logging.getLogger().addHandler(handler)
    try:
        stub = erasure_pb2_grpc.ErasureServiceStub(channel)
        await stub.SetLegalHold(
            erasure_pb2.SetLegalHoldRequest(customer_id="cust_00042", reason="CASE-7"),
            metadata=metadata(tenant),
        )
        try:
            await stub.EraseCustomer(
                erasure_pb2.EraseCustomerRequest(customer_id="cust_00042"),
                metadata=metadata(tenant),
            )
        except Exception as exc:  # FAILED_PRECONDITION: the hold
            assert "LEGAL_HOLD" in str(exc) or "hold" in str(exc).lower()
        else:
            raise AssertionError("erasure under a legal hold must be refused")
    finally:
        logging.getLogger().removeHandler(handler)
    assert any("rpc rejected" in line for line in handler.lines), handler.lines
    assert findings(handler.lines, []) == []
