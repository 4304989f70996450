-- An audit append in one statement (issue #22: what holds a tenant's audit chain).
--
-- An append locked the tenant's chain head (one round trip), hashed its rows in
-- Python, inserted them and moved the head (a second round trip); the caller
-- then committed. The head stays locked until that COMMIT, so every audited
-- write of the tenant waited for the holder's two round trips, the event-loop
-- latency between them on a busy server, and its commit. Now the caller
-- computes each row's canonical content in Python as before, split where the
-- chain enters it:
--
--     head || prev_hash || '","seq":' || seq || tail
--
-- (RFC 8785 orders the members ... "personalDigests", "prevHash", "seq",
-- "tenantId" ...; kaireon_client.audit_chain is the definition and
-- platform/audit_chain.py makes the two parts from it), and this function
-- locks the head, chains the rows (sha256 over those bytes, hex), inserts them
-- and moves the head in the same statement. The lock is held from this
-- statement until the caller's COMMIT, one round trip later.
--
-- SECURITY INVOKER: it runs as the caller (kaireon_app) under the tenant the
-- caller's transaction has set, like the statements it replaces.

CREATE FUNCTION kaireon_audit_append(
    p_tenant text, p_ids uuid[], p_actions text[], p_entity_types text[], p_entity_ids text[],
    p_entity_id_digests text[], p_entity_id_salts text[], p_actors text[], p_changes jsonb[],
    p_personal jsonb[], p_personal_salts jsonb[], p_personal_digests jsonb[],
    p_created_at timestamptz[], p_subject_ids text[], p_heads bytea[], p_tails bytea[])
    RETURNS TABLE (seq bigint, prev_hash text, integrity_hash text)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_seq bigint;
    v_hash text;
    n integer := coalesce(array_length(p_ids, 1), 0);
    seqs bigint[] := '{}';
    prevs text[] := '{}';
    hashes text[] := '{}';
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    SELECT h.seq, h.head_hash INTO v_seq, v_hash
      FROM audit_chain_head h WHERE h.tenant_id = p_tenant FOR UPDATE;
    IF NOT FOUND THEN
        -- The tenant's first row: create the head, then lock it like everyone else.
        INSERT INTO audit_chain_head (tenant_id, seq, head_hash) VALUES (p_tenant, 0, '')
            ON CONFLICT (tenant_id) DO NOTHING;
        SELECT h.seq, h.head_hash INTO v_seq, v_hash
          FROM audit_chain_head h WHERE h.tenant_id = p_tenant FOR UPDATE;
    END IF;
    FOR i IN 1 .. n LOOP
        v_seq := v_seq + 1;
        seqs := seqs || v_seq;
        prevs := prevs || v_hash;
        v_hash := encode(sha256(p_heads[i] || convert_to(v_hash || '","seq":'
                                                             || v_seq::text, 'UTF8')
                                   || p_tails[i]), 'hex');
        hashes := hashes || v_hash;
    END LOOP;
    INSERT INTO audit_log (tenant_id, seq, id, action, entity_type, entity_id,
        entity_id_digest, entity_id_salt, actor, changes, personal, personal_salts,
        personal_digests, prev_hash, integrity_hash, created_at, subject_id)
    SELECT p_tenant, * FROM unnest(seqs, p_ids, p_actions, p_entity_types, p_entity_ids,
        p_entity_id_digests, p_entity_id_salts, p_actors, p_changes, p_personal,
        p_personal_salts, p_personal_digests, prevs, hashes, p_created_at, p_subject_ids);
    UPDATE audit_chain_head h SET seq = v_seq, head_hash = v_hash
     WHERE h.tenant_id = p_tenant;
    RETURN QUERY SELECT * FROM unnest(seqs, prevs, hashes);
END
$fn$;

REVOKE ALL ON FUNCTION kaireon_audit_append(text, uuid[], text[], text[], text[], text[], text[],
    text[], jsonb[], jsonb[], jsonb[], jsonb[], timestamptz[], text[], bytea[], bytea[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_audit_append(text, uuid[], text[], text[], text[], text[],
    text[], text[], jsonb[], jsonb[], jsonb[], jsonb[], timestamptz[], text[], bytea[], bytea[])
    TO kaireon_app;
