"""The bundle's content: shape, metadata, as-of-decision artifacts, audit excerpt, generatedAt."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import rfc8785

from kaireon_server.demo.seed import RULES_CHANGED_AT
from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.canonical import canonical_digest, format_timestamp
from kaireon_server.platform.signing import verify_signature
from tests.provenance.conftest import AFTER_CHANGE, BEFORE_CHANGE, fetch

TOP_LEVEL = {
    "schemaVersion",
    "generatedAt",
    "decisionTrace",
    "modelSnapshots",
    "effectiveRulesByOffer",
    "auditLog",
    "buildIdentity",
    "fairnessSlice",
}


async def test_body_is_canonical_and_metadata_matches(channel, seeded, signing_key_path):
    got = await fetch(channel, seeded, AFTER_CHANGE)
    bundle = got.json
    assert set(bundle) == TOP_LEVEL
    assert bundle["schemaVersion"] == got.schema == "kaireon.provenance.v1"
    assert got.content_type == "application/json"
    # RFC 8785: re-canonicalising the parsed body gives the same bytes.
    assert rfc8785.dumps(json.loads(got.body)) == got.body
    assert got.digest == hashlib.sha256(got.body).hexdigest()
    assert got.initial_metadata["x-provenance-schema"] == "kaireon.provenance.v1"
    assert got.initial_metadata["x-provenance-digest"] == got.digest
    assert got.initial_metadata["x-provenance-signature"] == got.signature
    public = (signing_key_path.parent / "cosign-test.pub").read_text()
    assert verify_signature(public, got.body, got.signature)


async def test_models_and_fairness_are_those_in_force_at_decision_time(channel, seeded, db):
    before = (await fetch(channel, seeded, BEFORE_CHANGE)).json
    after = (await fetch(channel, seeded, AFTER_CHANGE)).json
    async with db.transaction(seeded) as con:
        states = {
            (r["model_id"], r["version"]): r["state"]
            for r in await con.fetch(
                "SELECT model_id, version, state FROM ml_model WHERE tenant_id = $1", seeded
            )
        }
    for bundle, version in ((before, 1), (after, 2)):
        snapshots = bundle["modelSnapshots"]
        assert [(s["modelId"], s["version"]) for s in snapshots] == [
            ("model_propensity", version),
            ("model_uplift", version),
        ]
        assert {s["modelType"] for s in snapshots} == {"gradient_boosted", "logistic_regression"}
        for s in snapshots:
            assert s["modelStateHashSha256"] == canonical_digest(states[(s["modelId"], version)])
            assert "state" not in s
        # The latest report created at or before the decision (ties: lowest id).
        assert bundle["fairnessSlice"]["reportId"] == f"fair_model_propensity_{version}"
        assert bundle["fairnessSlice"]["report"]["metric"] == "demographic_parity"
    # Every model and version has its own state, hence its own hash.
    hashes = [s["modelStateHashSha256"] for b in (before, after) for s in b["modelSnapshots"]]
    assert len(hashes) == 4 and len(set(hashes)) == 4


async def test_audit_log_holds_rows_about_the_decision_and_its_artifacts(channel, seeded, db):
    before = (await fetch(channel, seeded, BEFORE_CHANGE)).json
    after = (await fetch(channel, seeded, AFTER_CHANGE)).json
    # Before the rule change: the v1 model publications only.
    assert [e["action"] for e in before["auditLog"]] == ["model_version_published"] * 2
    assert [e["seq"] for e in before["auditLog"]] == [1, 3]
    # After it: the v2 publications and the rule-set publication then in force.
    assert [e["action"] for e in after["auditLog"]] == [
        "model_version_published",
        "model_version_published",
        "rules_published",
    ]
    assert [e["seq"] for e in after["auditLog"]] == [2, 4, 5]
    for entry in after["auditLog"]:
        assert set(entry) == {"id", "seq", "action", "prevHash", "integrityHash", "timestamp"}
    # The entries are the stored rows, hash for hash.
    async with db.transaction(seeded) as con:
        stored = {
            str(r["id"]): r
            for r in await con.fetch(
                "SELECT id, prev_hash, integrity_hash, created_at FROM audit_log "
                "WHERE tenant_id = $1",
                seeded,
            )
        }
    for entry in after["auditLog"]:
        row = stored[entry["id"]]
        assert entry["prevHash"] == row["prev_hash"]
        assert entry["integrityHash"] == row["integrity_hash"]
        assert entry["timestamp"] == format_timestamp(row["created_at"])


async def test_own_emission_rows_stay_out_and_rows_about_the_decision_come_in(channel, seeded, db):
    first = await fetch(channel, seeded, BEFORE_CHANGE)
    second = await fetch(channel, seeded, BEFORE_CHANGE)
    # Two emission rows now exist; neither is in the bundle.
    assert second.body == first.body
    assert "decision_provenance_emit" not in second.body.decode()
    decided = RULES_CHANGED_AT + timedelta(days=400)
    async with db.transaction(seeded) as con:
        await append_audit(
            con,
            seeded,
            action="decision_reviewed",
            entity_type="decision",
            entity_id=BEFORE_CHANGE,
            actor="reviewer",
            changes={"outcome": "upheld"},
            now=decided,
        )
    third = (await fetch(channel, seeded, BEFORE_CHANGE)).json
    assert [e["action"] for e in third["auditLog"]][-1] == "decision_reviewed"
    # generatedAt follows the latest contributing row, here that audit row.
    assert third["generatedAt"] == format_timestamp(decided)


async def test_generated_at_is_the_latest_contributing_timestamp(channel, seeded):
    bundle = (await fetch(channel, seeded, AFTER_CHANGE)).json
    candidates = [bundle["decisionTrace"]["decidedAt"], bundle["fairnessSlice"]["createdAt"]]
    candidates += [e["timestamp"] for e in bundle["auditLog"]]
    for entry in bundle["effectiveRulesByOffer"].values():
        candidates.append(entry["offer"]["validFrom"])
        candidates += [r["validFrom"] for r in entry["qualificationRules"]]
        candidates += [p["validFrom"] for p in entry["contactPolicies"]]
    # Same fixed-width format everywhere, so string order is time order.
    assert bundle["generatedAt"] == max(candidates)
    assert bundle["generatedAt"] == bundle["decisionTrace"]["decidedAt"]


async def test_effective_rules_cover_every_offer_of_the_trace(channel, seeded):
    bundle = (await fetch(channel, seeded, AFTER_CHANGE)).json
    trace = bundle["decisionTrace"]
    offers = {c["offerId"] for c in trace["candidates"]} | {trace["selectedOfferId"]}
    assert set(bundle["effectiveRulesByOffer"]) == offers
    for offer_id, entry in bundle["effectiveRulesByOffer"].items():
        assert entry["offer"]["offerId"] == offer_id
        assert entry["offer"]["version"] == 2  # the offer version in force after the change
        names = [r["name"] for r in entry["qualificationRules"]]
        assert f"{offer_id} eligibility" in names and "marketing opt-in" in names
        cascade = entry["explainCascade"]
        assert cascade["asOf"] == trace["decidedAt"]
        assert cascade["precedence"] == ["offer", "category", "global"]
        for item in cascade["qualificationRules"] + cascade["contactPolicies"]:
            assert [level["level"] for level in item["levels"]] == ["global", "category", "offer"]


async def test_seeded_personal_data_never_reaches_the_bundle(channel, seeded, db):
    async with db.transaction(seeded) as con:
        rec = await con.fetchrow(
            "SELECT customer_id, attributes FROM decision_trace WHERE tenant_id = $1 AND id = $2",
            seeded,
            AFTER_CHANGE,
        )
    customer = rec["attributes"]["customer"]
    secrets = [
        rec["customer_id"],
        customer["name"],
        *customer["name"].split(),
        customer["email"],
        customer["phone"],
        customer["address"],
        customer["birthDate"],
        rec["attributes"]["request"]["ip"],
    ]
    body = (await fetch(channel, seeded, AFTER_CHANGE)).body.decode()
    for value in secrets:
        assert value not in body
    trace = json.loads(body)["decisionTrace"]
    assert trace["customerId"] == "[REDACTED:customer_id]"
    assert trace["attributes"]["customer"]["email"] == "[REDACTED:email]"
    assert trace["attributes"]["request"]["note"].startswith("called from [REDACTED:phone]")
    # Non-personal attributes survive.
    assert trace["attributes"]["country"] == "FR"
    assert trace["attributes"]["customer"]["segment"] == customer["segment"]
