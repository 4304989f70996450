"""Same decision, another replica, later: byte-identical; any contributing change: another digest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from kaireon_client.signing import verify_signature
from kaireon_server.demo.seed import RULES_CHANGED_AT
from kaireon_server.platform.audit_chain import append_audit
from tests.provenance.conftest import AFTER_CHANGE, BEFORE_CHANGE, fetch
from tests.support.server import ServerProcess, base_env, wait_for_channel

OFFSET_SECONDS = 420  # the second replica's clock runs seven minutes ahead


@pytest.fixture(scope="module")
async def late_replica(database_url, signing_key_path) -> AsyncIterator[ServerProcess]:
    """A second server *process* on the same database whose clock is injected ahead."""
    env = base_env(
        database_url,
        COSIGN_KEY=str(signing_key_path),
        KAIREON_CLOCK_OFFSET_SECONDS=str(OFFSET_SECONDS),
    )
    server = ServerProcess(env).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
async def test_two_replicas_minutes_apart_emit_identical_bytes(
    channel, seeded, db, late_replica, signing_key_path
):
    public = (signing_key_path.parent / "cosign-test.pub").read_text()
    first = await fetch(channel, seeded, AFTER_CHANGE)
    late_channel = await wait_for_channel(late_replica.target)
    try:
        second = await fetch(late_channel, seeded, AFTER_CHANGE)
    finally:
        await late_channel.close()
    assert second.body == first.body
    assert second.digest == first.digest
    # ECDSA signatures are randomised, so they differ; both verify.
    assert verify_signature(first.body, first.signature, public)
    assert verify_signature(second.body, second.signature, public)
    # The clock really was injected: the emission rows are minutes apart.
    async with db.transaction(seeded) as con:
        times = await con.fetch(
            "SELECT created_at FROM audit_log WHERE tenant_id = $1 "
            "AND action = 'decision_provenance_emit' ORDER BY seq",
            seeded,
        )
    assert len(times) == 2
    assert times[1]["created_at"] - times[0]["created_at"] >= timedelta(seconds=OFFSET_SECONDS - 60)


async def _seed_audit(con, tenant, entity_type, entity_id, action="artifact_reviewed"):
    await append_audit(
        con,
        tenant,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        actor="tester",
        changes={"note": "x"},
        now=RULES_CHANGED_AT + timedelta(days=1),
    )


# Each mutation touches one row that contributes to AFTER_CHANGE's bundle.
CONTRIBUTING = {
    "trace attribute": "UPDATE decision_trace SET attributes = jsonb_set(attributes, '{age}', '99') "
    "WHERE tenant_id = $1 AND id = 'dec_00001_3'",
    "trace candidate score": "UPDATE decision_trace SET candidates = jsonb_set(candidates, "
    "'{0,score}', '0.123') WHERE tenant_id = $1 AND id = 'dec_00001_3'",
    "trace channel": "UPDATE decision_trace SET channel = 'push' "
    "WHERE tenant_id = $1 AND id = 'dec_00001_3'",
    "model state": "UPDATE ml_model SET state = jsonb_set(state, '{bias}', '0.5') "
    "WHERE tenant_id = $1 AND model_id = 'model_uplift' AND version = 2",
    "model type": "UPDATE ml_model SET model_type = 'neural_net' "
    "WHERE tenant_id = $1 AND model_id = 'model_uplift' AND version = 2",
    "global rule in force": 'UPDATE rule SET expression = \'{"attribute": "x"}\' '
    "WHERE tenant_id = $1 AND rule_id = 'rule_global_optin'",
    "rule priority": "UPDATE rule SET priority = 7 "
    "WHERE tenant_id = $1 AND rule_id = 'rule_global_optin'",
    "contact policy in force": "UPDATE contact_policy SET policy = '{\"maxContacts\": 9}' "
    "WHERE tenant_id = $1 AND policy_id = 'policy_global_cap'",
    "offer name": "UPDATE offer SET name = 'renamed' WHERE tenant_id = $1 AND version = 2",
    "fairness report": "UPDATE fairness_report SET report = '{\"passed\": false}' "
    "WHERE tenant_id = $1 AND id = 'fair_model_propensity_2'",
    "validity moved so another version is in force": "UPDATE ml_model SET valid_from = "
    "valid_from + interval '400 days' WHERE tenant_id = $1 AND version = 2",
}

NOT_CONTRIBUTING = {
    "rule version not in force": 'UPDATE rule SET expression = \'{"attribute": "y"}\' '
    "WHERE tenant_id = $1 AND version = 1 AND valid_to IS NOT NULL",
    "another decision": "UPDATE decision_trace SET channel = 'push' "
    "WHERE tenant_id = $1 AND id <> 'dec_00001_3'",
    "model version not used": "UPDATE ml_model SET state = '{}' WHERE tenant_id = $1 AND version = 1",
    "closing the versions in force later": "UPDATE rule SET valid_to = now() + interval '1000 days' "
    "WHERE tenant_id = $1 AND valid_to IS NULL",
}


@pytest.mark.parametrize("name", sorted(CONTRIBUTING))
async def test_changing_a_contributing_row_changes_the_digest(channel, seeded, db, name):
    original = await fetch(channel, seeded, AFTER_CHANGE)
    async with db.transaction(seeded) as con:
        result = await con.execute(CONTRIBUTING[name], seeded)
    assert result.split()[-1] != "0", "the mutation must touch a row"
    changed = await fetch(channel, seeded, AFTER_CHANGE)
    assert changed.digest != original.digest


@pytest.mark.parametrize(
    ("entity_type", "entity_id"),
    [
        ("decision", AFTER_CHANGE),
        ("ml_model", "model_uplift@2"),
        ("ml_model", "model_uplift"),
        ("rule", "rule_global_optin"),
        ("contact_policy", "policy_global_cap@1"),
        ("fairness_report", "fair_model_propensity_2"),
    ],
)
async def test_a_new_audit_row_about_a_used_artifact_changes_the_digest(
    channel, seeded, db, entity_type, entity_id
):
    original = await fetch(channel, seeded, AFTER_CHANGE)
    async with db.transaction(seeded) as con:
        await _seed_audit(con, seeded, entity_type, entity_id)
    changed = await fetch(channel, seeded, AFTER_CHANGE)
    assert changed.digest != original.digest
    assert len(changed.json["auditLog"]) == len(original.json["auditLog"]) + 1


@pytest.mark.parametrize("name", sorted(NOT_CONTRIBUTING))
async def test_changing_an_unrelated_row_keeps_the_digest(channel, seeded, db, name):
    original = await fetch(channel, seeded, AFTER_CHANGE)
    async with db.transaction(seeded) as con:
        result = await con.execute(NOT_CONTRIBUTING[name], seeded)
        assert result.split()[-1] != "0"
        await _seed_audit(con, seeded, "ml_model", "model_uplift@1")
        await _seed_audit(con, seeded, "decision", BEFORE_CHANGE)
    unchanged = await fetch(channel, seeded, AFTER_CHANGE)
    assert unchanged.body == original.body
