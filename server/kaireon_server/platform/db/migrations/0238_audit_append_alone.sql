-- A group-committed batch of audit rows in one round trip (issue #22: provenance).
--
-- AuditBatcher wrote each batch in a pooled transaction: BEGIN, the tenant
-- setting, kaireon_audit_append (0231), COMMIT and the pool's reset, five round
-- trips for rows that need no other write. This function is that append as a
-- statement of its own (its own transaction): it sets the tenant for the
-- policies, locally (gone with the statement's transaction), then appends. The
-- chain head is locked from the append to the statement's commit, with no
-- client round trip in between.
--
-- SECURITY INVOKER: it runs as the caller (kaireon_app), under the
-- tenant_isolation policies, like kaireon_dsar_create (0237).
CREATE FUNCTION kaireon_audit_append_alone(
    p_tenant text, p_ids uuid[], p_actions text[], p_entity_types text[], p_entity_ids text[],
    p_entity_id_digests text[], p_entity_id_salts text[], p_actors text[], p_changes jsonb[],
    p_personal jsonb[], p_personal_salts jsonb[], p_personal_digests jsonb[],
    p_created_at timestamptz[], p_subject_ids text[], p_heads bytea[], p_tails bytea[])
    RETURNS TABLE (seq bigint, prev_hash text, integrity_hash text)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
BEGIN
    PERFORM set_config('kaireon.tenant_id', p_tenant, true);
    RETURN QUERY SELECT a.seq, a.prev_hash, a.integrity_hash FROM kaireon_audit_append(
        p_tenant, p_ids, p_actions, p_entity_types, p_entity_ids, p_entity_id_digests,
        p_entity_id_salts, p_actors, p_changes, p_personal, p_personal_salts,
        p_personal_digests, p_created_at, p_subject_ids, p_heads, p_tails) AS a;
END
$fn$;

REVOKE ALL ON FUNCTION kaireon_audit_append_alone(
    text, uuid[], text[], text[], text[], text[], text[], text[], jsonb[], jsonb[], jsonb[],
    jsonb[], timestamptz[], text[], bytea[], bytea[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_audit_append_alone(
    text, uuid[], text[], text[], text[], text[], text[], text[], jsonb[], jsonb[], jsonb[],
    jsonb[], timestamptz[], text[], bytea[], bytea[]) TO kaireon_app;
