-- A bundle's cited audit rows looked up per cited entity, whatever the
-- statistics say (issue #22, costs that grow with history).
--
-- 0160 joined the cited entities to audit_log. In the generic plan PL/pgSQL
-- settles on after five calls, with statistics taken while a tenant's log was
-- small, PostgreSQL hashed that join and walked every audit row of the tenant,
-- emission rows included: 8 ms per first emission at 31,000 emission rows
-- (the perf seed after one k6 run), growing with every bundle served. Here
-- each cited (entity_type, entity_id) is its own index lookup in
-- audit_log_citation_idx (0101), which holds no emission row: the OFFSET 0
-- keeps the LATERAL subquery from being pulled up into a join the planner
-- could hash again. Result columns and rows are unchanged (the bundles'
-- bytes too: tests/provenance/test_fast_path.py compares them).

CREATE OR REPLACE FUNCTION kaireon_provenance_bundle(p_tenant text, p_decision_id text)
    RETURNS SETOF record
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
DECLARE
    previous text := current_setting('kaireon.tenant_id', true);
BEGIN
    PERFORM set_config('kaireon.tenant_id', p_tenant, true);
    RETURN QUERY
        WITH d AS (
            SELECT id, customer_id, decided_at, channel, selected_offer_id, candidates, models,
                   qualification_results, contact_policy_results, attributes
              FROM decision_trace
             WHERE tenant_id = p_tenant AND id = p_decision_id
        ),
        -- The selected offer and the non-empty string offerId of every object in the
        -- three result lists (a list that is not an array counts as empty).
        offer_ref AS (
            SELECT selected_offer_id AS offer_id FROM d WHERE selected_offer_id <> ''
            UNION
            SELECT e.item ->> 'offerId'
              FROM d,
                   LATERAL (VALUES (d.candidates), (d.qualification_results),
                                   (d.contact_policy_results)) AS src(list),
                   LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(src.list) = 'array'
                                                     THEN src.list ELSE '[]' END) AS e(item)
             WHERE jsonb_typeof(e.item -> 'offerId') = 'string' AND e.item ->> 'offerId' <> ''
        ),
        -- Overlapping versions would be a catalogue error; the newest one is taken.
        offers AS (
            SELECT DISTINCT ON (o.offer_id) o.offer_id, o.version, o.category_id, o.name, o.valid_from
              FROM offer o, d
             WHERE o.tenant_id = p_tenant AND o.offer_id IN (SELECT offer_id FROM offer_ref)
               AND o.valid_from <= d.decided_at AND (o.valid_to IS NULL OR o.valid_to > d.decided_at)
             ORDER BY o.offer_id, o.version DESC
        ),
        -- Rules and policies in force: global, of the offers' categories, of the offers.
        rules AS (
            SELECT a.rule_id AS artifact_id, a.version, a.level, a.scope_id, a.name,
                   a.expression::text AS body, a.priority, a.valid_from
              FROM rule a, d
             WHERE a.tenant_id = p_tenant
               AND a.valid_from <= d.decided_at AND (a.valid_to IS NULL OR a.valid_to > d.decided_at)
               AND (a.level = 'global'
                    OR (a.level = 'category' AND a.scope_id IN (SELECT category_id FROM offers))
                    OR (a.level = 'offer' AND a.scope_id IN (SELECT offer_id FROM offers)))
        ),
        policies AS (
            SELECT a.policy_id AS artifact_id, a.version, a.level, a.scope_id, a.name,
                   a.policy::text AS body, a.priority, a.valid_from
              FROM contact_policy a, d
             WHERE a.tenant_id = p_tenant
               AND a.valid_from <= d.decided_at AND (a.valid_to IS NULL OR a.valid_to > d.decided_at)
               AND (a.level = 'global'
                    OR (a.level = 'category' AND a.scope_id IN (SELECT category_id FROM offers))
                    OR (a.level = 'offer' AND a.scope_id IN (SELECT offer_id FROM offers)))
        ),
        -- Every object of the models list with a string modelId; its version when that
        -- is a JSON integer (jsonb prints integers as plain digits), else NULL: the
        -- version in force at the decision time.
        model_ref AS (
            SELECT e.item ->> 'modelId' AS model_id,
                   CASE WHEN jsonb_typeof(e.item -> 'version') = 'number'
                             AND (e.item -> 'version')::text ~ '^-?[0-9]+$'
                        THEN (e.item -> 'version')::text::numeric END AS version
              FROM d,
                   LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(d.models) = 'array'
                                                     THEN d.models ELSE '[]' END) AS e(item)
             WHERE jsonb_typeof(e.item -> 'modelId') = 'string'
        ),
        models AS (
            SELECT m.model_id, m.version, m.model_type,
                   sha256(convert_to(m.state::text, 'UTF8')) AS state_key, m.valid_from
              FROM ml_model m, d
             WHERE m.tenant_id = p_tenant
               AND ((m.model_id, m.version::numeric) IN
                        (SELECT model_id, version FROM model_ref WHERE version IS NOT NULL)
                    OR (m.model_id IN (SELECT model_id FROM model_ref WHERE version IS NULL)
                        AND m.valid_from <= d.decided_at
                        AND (m.valid_to IS NULL OR m.valid_to > d.decided_at)))
        ),
        -- The latest report of a model found, created at or before the decision.
        fairness AS (
            SELECT f.id, f.model_id, f.report, f.created_at
              FROM fairness_report f, d
             WHERE f.tenant_id = p_tenant AND f.model_id IN (SELECT model_id FROM models)
               AND f.created_at <= d.decided_at
             ORDER BY f.created_at DESC, f.id
             LIMIT 1
        ),
        -- (entity_type, entity_id) of every audit row "about" the decision or an
        -- artifact it used; versioned artifacts are named by id or "<id>@<version>".
        entity AS (
            SELECT t.entity_type, d.id AS entity_id
              FROM d, unnest(ARRAY['decision', 'decision_trace']) AS t(entity_type)
            UNION SELECT 'ml_model', model_id FROM models
            UNION SELECT 'ml_model', model_id || '@' || version FROM models
            UNION SELECT 'offer', offer_id FROM offers
            UNION SELECT 'offer', offer_id || '@' || version FROM offers
            UNION SELECT 'rule', artifact_id FROM rules
            UNION SELECT 'rule', artifact_id || '@' || version FROM rules
            UNION SELECT 'contact_policy', artifact_id FROM policies
            UNION SELECT 'contact_policy', artifact_id || '@' || version FROM policies
            UNION SELECT 'fairness_report', id FROM fairness
        ),
        -- Those rows plus the rule-set publication in force at the decision time;
        -- never the bundle's own emission rows.
        audit AS (
            SELECT a.id, a.seq, a.action, a.prev_hash, a.integrity_hash, a.created_at
              FROM entity e CROSS JOIN LATERAL (
                   SELECT c.id, c.seq, c.action, c.prev_hash, c.integrity_hash, c.created_at
                     FROM audit_log c
                    WHERE c.tenant_id = p_tenant AND c.entity_type = e.entity_type
                      AND c.entity_id = e.entity_id
                      AND c.action <> 'decision_provenance_emit'
                   OFFSET 0) a
            UNION
            SELECT a.id, a.seq, a.action, a.prev_hash, a.integrity_hash, a.created_at
              FROM audit_log a
             WHERE a.tenant_id = p_tenant AND a.action <> 'decision_provenance_emit'
               AND a.seq = (SELECT s.seq FROM audit_log s, d
                             WHERE s.tenant_id = p_tenant AND s.entity_type = 'rule_set'
                               AND s.created_at <= d.decided_at
                             ORDER BY s.created_at DESC, s.seq DESC LIMIT 1)
        )
        SELECT d.*,
               (SELECT array_agg(ROW(offer_id, version, category_id, name, valid_from)
                                 ORDER BY offer_id) FROM offers) AS offer_rows,
               (SELECT array_agg(ROW(artifact_id, version, level, scope_id, name, body, priority,
                                     valid_from)
                                 ORDER BY level, scope_id, artifact_id, version) FROM rules)
                   AS rule_rows,
               (SELECT array_agg(ROW(artifact_id, version, level, scope_id, name, body, priority,
                                     valid_from)
                                 ORDER BY level, scope_id, artifact_id, version) FROM policies)
                   AS policy_rows,
               (SELECT array_agg(ROW(model_id, version, model_type, state_key, valid_from)
                                 ORDER BY model_id, version) FROM models) AS model_rows,
               (SELECT ROW(id, model_id, report, created_at) FROM fairness) AS fairness_row,
               (SELECT array_agg(ROW(id, seq, action, prev_hash, integrity_hash, created_at)
                                 ORDER BY seq) FROM audit) AS audit_rows
          FROM d;
    -- Inside a caller's transaction the setting would otherwise outlive the call.
    PERFORM set_config('kaireon.tenant_id', coalesce(previous, ''), true);
END
$fn$;
