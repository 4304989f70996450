"""`kaireon erase` asks first: a terminal answers, a script passes --yes, anything else is refused."""

from __future__ import annotations

import base64
import json
import os
import pty

import pytest

from kaireon_server.platform.db import Database
from tests.cli.support import cli, run

pytestmark = pytest.mark.slow  # subprocesses of the real console script


async def _interactions(db: Database, tenant: str, customer: str) -> int:
    async with db.transaction(tenant, readonly=True) as con:
        count = await con.fetchval(
            "SELECT count(*) FROM interaction_history WHERE tenant_id = $1 AND customer_id = $2",
            tenant,
            customer,
        )
    return int(count)


async def _on_a_terminal(argv: list[str], typed: bytes) -> tuple[int, str, str]:
    """Run with a pseudo-terminal as stdin, the answer already typed."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, typed)
        return await run(*argv, stdin_fd=terminal)
    finally:
        os.close(terminal)
        os.close(controller)


async def test_without_a_terminal_or_yes_nothing_is_erased(
    grpc_target: str, db: Database, seeded: str
):
    before = await _interactions(db, seeded, "cust_00001")
    assert before > 0
    code, out, err = await run(*cli(grpc_target, seeded), "erase", "cust_00001", stdin=b"y\n")
    assert code == 2 and out == ""
    assert "refusing to erase 'cust_00001' in tenant " + seeded in err
    assert "--yes" in err
    assert await _interactions(db, seeded, "cust_00001") == before


async def test_the_terminal_prompt_names_tenant_and_customer(
    grpc_target: str, db: Database, seeded: str
):
    argv = [*cli(grpc_target, seeded), "erase", "cust_00002"]
    code, out, err = await _on_a_terminal(argv, b"y\n")  # only the customer id confirms
    assert code == 2 and "not confirmed; nothing was erased" in err
    assert f"customer 'cust_00002' in tenant {seeded}" in err and out == ""
    assert await _interactions(db, seeded, "cust_00002") > 0

    code, out, err = await _on_a_terminal(argv, b"cust_00002\n")
    assert code == 0, err
    assert out.startswith("erased cust_00002: ") and "Type the customer id" in err
    assert await _interactions(db, seeded, "cust_00002") == 0


async def test_dry_run_and_yes_need_no_terminal(grpc_target: str, db: Database, seeded: str):
    code, out, err = await run(*cli(grpc_target, seeded), "erase", "cust_00003", "--dry-run")
    assert code == 0, err
    assert out.startswith("would erase cust_00003: ")
    assert await _interactions(db, seeded, "cust_00003") > 0
    code, out, err = await run(*cli(grpc_target, seeded), "erase", "cust_00003", "--yes")
    assert code == 0, err
    assert await _interactions(db, seeded, "cust_00003") == 0


async def test_holds_set_list_release_around_a_refused_erasure(
    grpc_target: str, db: Database, seeded: str
):
    base = cli(grpc_target, seeded)
    code, out, err = await run(*base, "holds", "list")
    assert (code, out) == (0, "no legal holds\n"), err
    code, out, err = await run(*base, "holds", "set", "cust_00004", "--reason", "CASE-2026-0042")
    assert (code, out) == (0, "held cust_00004: CASE-2026-0042\n"), err

    code, out, err = await run(*base, "--json", "holds", "list")
    assert code == 0, err
    (hold,) = json.loads(out)["legalHolds"]
    assert hold["customerId"] == "cust_00004" and hold["reason"] == "CASE-2026-0042"
    code, _, err = await run(*base, "erase", "cust_00004", "--yes")
    assert code == 1 and "FAILED_PRECONDITION" in err and "CASE-2026-0042" in err
    assert await _interactions(db, seeded, "cust_00004") > 0

    code, out, err = await run(*base, "holds", "release", "cust_00004")
    assert (code, out) == (0, "released cust_00004 (was: CASE-2026-0042)\n"), err
    code, _, err = await run(*base, "holds", "release", "cust_00004")
    assert code == 1 and "NOT_FOUND" in err
    code, _, err = await run(*base, "erase", "cust_00004", "--yes")
    assert code == 0, err
    # Setting a hold is the admin's, like erasure; listing is anyone's.
    code, _, err = await run(
        *cli(grpc_target, seeded, "viewer"), "holds", "set", "c", "--reason", "X"
    )
    assert code == 1 and "PERMISSION_DENIED" in err
    code, _, err = await run(*base, "holds", "set", "cust_00001")
    assert code == 2 and "--reason" in err


async def test_a_tenant_with_nothing_to_erase_gets_an_answer_not_a_traceback(
    grpc_target: str, tenant: str
):
    """A fresh tenant: the answer has no counts at all (proto3 JSON drops an empty map)."""
    for extra in (["--dry-run"], ["--yes"]):
        code, out, err = await run(*cli(grpc_target, tenant), "erase", "cust_none", *extra)
        assert code == 0 and "Traceback" not in err, err
        assert ": 0 rows" in out.splitlines()[0], out


def test_the_prompt_shows_no_control_characters_from_a_token():
    from kaireon_client.cli.erase import tenant_label
    from kaireon_client.config import ClientConfig

    def token(claims: dict[str, object]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        return f"e30.{body}.sig"

    def label(claims: dict[str, object]) -> str:
        return tenant_label(ClientConfig(target="x:1", token=token(claims)))

    assert label({"tenant_id": "acme"}) == "acme (from the token)"
    assert label({"tenant_id": "acme\x1b[2K\rdemo"}) == "the token's tenant"
    assert label({"tenant_id": ["acme"]}) == "the token's tenant"
    assert label({"sub": "x"}) == "the token's tenant"
