"""The rule cascade is the one in force at decision time, and the most specific level wins."""

from __future__ import annotations

from datetime import timedelta

from kaireon_server.demo.seed import EPOCH
from tests.provenance.conftest import BEFORE_CHANGE, fetch


async def _decided_at(db, tenant, decision_id):
    async with db.transaction(tenant) as con:
        return await con.fetchval(
            "SELECT decided_at FROM decision_trace WHERE tenant_id = $1 AND id = $2",
            tenant,
            decision_id,
        )


async def _edit_versioned(con, tenant, table, key, artifact_id, column, new_value, at):
    """The platform's edit: close the version in force at `at`, open the next one."""
    current = await con.fetchrow(
        f"SELECT * FROM {table} WHERE tenant_id = $1 AND {key} = $2 AND valid_to IS NULL",
        tenant,
        artifact_id,
    )
    await con.execute(
        f"UPDATE {table} SET valid_to = $3 WHERE tenant_id = $1 AND {key} = $2 AND version = $4",
        tenant,
        artifact_id,
        at,
        current["version"],
    )
    row = dict(current)
    row.update({"version": current["version"] + 1, column: new_value, "valid_from": at})
    row["valid_to"] = None
    columns = list(row)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    await con.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", *row.values()
    )
    return current["version"] + 1


async def test_rule_edited_after_the_decision_does_not_change_its_cascade(channel, seeded, db):
    original = await fetch(channel, seeded, BEFORE_CHANGE)
    decided = await _decided_at(db, seeded, BEFORE_CHANGE)
    edit_at = decided + timedelta(hours=1)
    async with db.transaction(seeded) as con:
        rule_version = await _edit_versioned(
            con,
            seeded,
            "rule",
            "rule_id",
            "rule_global_optin",
            "expression",
            {"attribute": "marketingOptIn", "op": "==", "value": False},
            edit_at,
        )
        policy_version = await _edit_versioned(
            con,
            seeded,
            "contact_policy",
            "policy_id",
            "policy_global_cap",
            "policy",
            {"maxContacts": 1, "periodDays": 1},
            edit_at,
        )
        # A new decision after the edit, same offers as the old one.
        await con.execute(
            "INSERT INTO decision_trace (tenant_id, id, customer_id, decided_at, channel, "
            "selected_offer_id, candidates, models, attributes) "
            "SELECT tenant_id, 'dec_after_edit', customer_id, $3, channel, selected_offer_id, "
            "candidates, models, '{}'::jsonb FROM decision_trace WHERE tenant_id = $1 AND id = $2",
            seeded,
            BEFORE_CHANGE,
            edit_at + timedelta(minutes=5),
        )
    again = await fetch(channel, seeded, BEFORE_CHANGE)
    assert again.json["effectiveRulesByOffer"] == original.json["effectiveRulesByOffer"]
    assert again.digest == original.digest

    def global_versions(bundle):
        versions = set()
        for entry in bundle["effectiveRulesByOffer"].values():
            versions |= {
                (r["ruleId"], r["version"])
                for r in entry["qualificationRules"]
                if r["ruleId"] == "rule_global_optin"
            }
            versions |= {
                (p["policyId"], p["version"])
                for p in entry["contactPolicies"]
                if p["policyId"] == "policy_global_cap"
            }
        return versions

    assert global_versions(again.json) == {("rule_global_optin", 1), ("policy_global_cap", 1)}
    # The decision made after the edit sees the new versions: the interval logic is live.
    later = (await fetch(channel, seeded, "dec_after_edit")).json
    assert global_versions(later) == {
        ("rule_global_optin", rule_version),
        ("policy_global_cap", policy_version),
    }
    entry = next(iter(later["effectiveRulesByOffer"].values()))
    rule = next(r for r in entry["qualificationRules"] if r["ruleId"] == "rule_global_optin")
    assert rule["expression"]["value"] is False


async def test_most_specific_level_wins_per_name_and_the_trace_says_why(channel, seeded, db):
    bundle = (await fetch(channel, seeded, BEFORE_CHANGE)).json
    offer_id = bundle["decisionTrace"]["selectedOfferId"]
    category = bundle["effectiveRulesByOffer"][offer_id]["offer"]["categoryId"]
    async with db.transaction(seeded) as con:
        rows = [
            ("r_age_global", "global", None, 18, 3),
            ("r_age_category", "category", category, 20, 3),
            ("r_age_offer", "offer", offer_id, 25, 1),
            ("r_age_offer_hi", "offer", offer_id, 30, 9),
        ]
        for rule_id, level, scope, value, priority in rows:
            await con.execute(
                "INSERT INTO rule (tenant_id, rule_id, version, level, scope_id, name, "
                "expression, priority, valid_from) VALUES ($1, $2, 1, $3, $4, 'min age', $5, $6, $7)",
                seeded,
                rule_id,
                level,
                scope,
                {"attribute": "age", "op": ">=", "value": value},
                priority,
                EPOCH,
            )
        await con.execute(
            "INSERT INTO contact_policy (tenant_id, policy_id, version, level, scope_id, name, "
            "policy, priority, valid_from) VALUES ($1, 'p_cap_category', 1, 'category', $2, "
            "'global daily cap', '{\"maxContacts\": 5}', 1, $3)",
            seeded,
            category,
            EPOCH,
        )
    entry = (await fetch(channel, seeded, BEFORE_CHANGE)).json["effectiveRulesByOffer"][offer_id]
    min_age = [r for r in entry["qualificationRules"] if r["name"] == "min age"]
    # One rule per name survives: the offer level, highest priority there.
    assert [(r["ruleId"], r["expression"]["value"]) for r in min_age] == [("r_age_offer_hi", 30)]
    explain = next(
        e for e in entry["explainCascade"]["qualificationRules"] if e["name"] == "min age"
    )
    assert [(lvl["level"], lvl["scopeId"]) for lvl in explain["levels"]] == [
        ("global", None),
        ("category", category),
        ("offer", offer_id),
    ]
    assert [[c["ruleId"] for c in lvl["candidates"]] for lvl in explain["levels"]] == [
        ["r_age_global"],
        ["r_age_category"],
        ["r_age_offer_hi", "r_age_offer"],
    ]
    assert explain["winner"] == {"level": "offer", "ruleId": "r_age_offer_hi", "version": 1}
    assert {s["ruleId"] for s in explain["shadowed"]} == {
        "r_age_global",
        "r_age_category",
        "r_age_offer",
    }
    # Contact policies: the category's cap overrides the global one of the same name.
    caps = [p for p in entry["contactPolicies"] if p["name"] == "global daily cap"]
    assert [p["policyId"] for p in caps] == ["p_cap_category"]
    explain_cap = next(
        e for e in entry["explainCascade"]["contactPolicies"] if e["name"] == "global daily cap"
    )
    assert explain_cap["winner"]["level"] == "category"
    assert explain_cap["shadowed"] == [
        {"level": "global", "policyId": "policy_global_cap", "version": 1}
    ]
    # Rules of other offers or categories are not considered at all.
    considered = {
        c["ruleId"]
        for e in entry["explainCascade"]["qualificationRules"]
        for lvl in e["levels"]
        for c in lvl["candidates"]
    }
    assert all(
        not r.startswith("rule_offer_") or r == f"rule_{offer_id.lower()}" for r in considered
    )
