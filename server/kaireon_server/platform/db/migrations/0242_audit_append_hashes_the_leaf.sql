-- An audit row's transparency-log leaf hash made by its append (issue #22: the
-- bulk provenance stream, one audit row per bundle).
--
-- Every audit row was made twice: by its append (its canonical content, its
-- chain hash), then by the log's integrator (audit/tlog.py), which read the
-- row's fourteen columns back and rebuilt its leaf in Python to hash it, 21 µs
-- a row of the server's CPU beside the read. And a PL/pgSQL trigger per row
-- inserted made the row's subject digest (its salt and sha256), 20 µs a row of
-- PostgreSQL's CPU. Under the stream (5,000 rows/s) that is a tenth of the
-- machine.
--
-- Now the writer (platform/audit_chain.py) makes the subject's salt and digest
-- beside the other personal digests, and the append makes the leaf from the
-- bytes the chain hash is made of, which the writer already sends split where
-- the chain enters them (0231):
--
--     head = '{"action":...,"id":"..."' || ',"personalDigests":{...}' || ',"prevHash":"'
--     leaf = '{"action":...,"id":"..."' || ',"leafVersion":1' || ',"personalDigests":{...}'
--            || ',"seq":' || seq || ',"subjectIdDigest":' || digest or null || tail
--     leaf_hash = sha256(0x00 || leaf)
--
-- (RFC 9162's leaf hash of the RFC 8785 leaf, kaireon_client/tlog/leaf.py: the
-- leaf's members sort as the chain content's, "leafVersion" just before
-- "personalDigests", "subjectIdDigest" just after "seq", no "prevHash"). The
-- writer sends where "personalDigests" begins in the head (leaf_cut), and the
-- append stores the hash in the same statement: no second copy of the
-- content on the wire. The integrator reads 32 bytes a row. It trusts nothing
-- it did not check before: a leaf hash that is not the row's own shows as a
-- mismatch to every verification, which recomputes each leaf from the row
-- (tlog verify, the auditor's client), as a row changed after its integration
-- always did. Rows written before this migration have no stored leaf hash;
-- the integrator rebuilds theirs as before. tests/platform/test_audit_chain.py
-- holds every stored leaf hash equal to the client's, whatever a row holds.

ALTER TABLE audit_log ADD COLUMN leaf_hash bytea
    CONSTRAINT audit_log_leaf_hash_size CHECK (length(leaf_hash) = 32);

-- A row about a subject carries the subject's digest from its writer (the
-- trigger no longer makes it), and a digest is 64 lowercase hex digits (the
-- append writes it into the leaf's bytes). NOT VALID: the rows already here
-- got theirs from the trigger; every new one is checked.
ALTER TABLE audit_log ADD CONSTRAINT audit_log_subject_digest_given
    CHECK (subject_id IS NULL OR subject_id_digest IS NOT NULL) NOT VALID;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_subject_digest_hex
    CHECK (subject_id_digest ~ '^[0-9a-f]{64}$') NOT VALID;

-- The trigger keeps what it kept on UPDATE (the digest never changes,
-- redaction drops the salt), and now the leaf hash too; INSERT no longer fires it.
CREATE OR REPLACE FUNCTION kaireon_audit_subject_digest()
    RETURNS trigger
    LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
BEGIN
    NEW.subject_id_digest := OLD.subject_id_digest;
    NEW.leaf_hash := OLD.leaf_hash;
    IF NEW.subject_id IS NULL THEN
        NEW.subject_id_salt := NULL;
    ELSE
        NEW.subject_id_salt := OLD.subject_id_salt;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER audit_log_subject_digest ON audit_log;
CREATE TRIGGER audit_log_subject_digest
    BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION kaireon_audit_subject_digest();

-- Rows chained at COMMIT (0234) carry the same parts.
ALTER TABLE audit_pending
    ADD COLUMN subject_id_salt text,
    ADD COLUMN subject_id_digest text,
    ADD COLUMN leaf_cut integer;

DROP FUNCTION kaireon_audit_append_alone(
    text, uuid[], text[], text[], text[], text[], text[], text[], jsonb[], jsonb[], jsonb[],
    jsonb[], timestamptz[], text[], bytea[], bytea[]);
DROP FUNCTION kaireon_audit_append(
    text, uuid[], text[], text[], text[], text[], text[], text[], jsonb[], jsonb[], jsonb[],
    jsonb[], timestamptz[], text[], bytea[], bytea[]);

-- 0231's append, with the subject's salt and digest and the leaf hash.
CREATE FUNCTION kaireon_audit_append(
    p_tenant text, p_ids uuid[], p_actions text[], p_entity_types text[], p_entity_ids text[],
    p_entity_id_digests text[], p_entity_id_salts text[], p_actors text[], p_changes jsonb[],
    p_personal jsonb[], p_personal_salts jsonb[], p_personal_digests jsonb[],
    p_created_at timestamptz[], p_subject_ids text[], p_heads bytea[], p_tails bytea[],
    p_subject_id_salts text[], p_subject_id_digests text[], p_leaf_cuts integer[])
    RETURNS TABLE (seq bigint, prev_hash text, integrity_hash text)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_seq bigint;
    v_hash text;
    v_text bytea;
    v_head bytea;
    v_cut integer;
    n integer := coalesce(array_length(p_ids, 1), 0);
    seqs bigint[] := '{}';
    prevs text[] := '{}';
    hashes text[] := '{}';
    leaves bytea[] := '{}';
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
        v_text := convert_to(v_seq::text, 'UTF8');
        seqs := seqs || v_seq;
        prevs := prevs || v_hash;
        v_hash := encode(sha256(p_heads[i] || convert_to(v_hash || '","seq":', 'UTF8')
                                || v_text || p_tails[i]), 'hex');
        hashes := hashes || v_hash;
        -- A head ends with ',"prevHash":"' (13 bytes) and its cut is where
        -- ',"personalDigests":{' begins; anything else is no head this function
        -- understands, and fails the whole append.
        v_head := p_heads[i];
        v_cut := p_leaf_cuts[i];
        IF v_cut IS NULL OR v_cut < 1 OR v_cut > octet_length(v_head) - 13
           OR substring(v_head FROM v_cut + 1 FOR 20)
              <> convert_to(',"personalDigests":{', 'UTF8')
           OR substring(v_head FROM octet_length(v_head) - 12)
              <> convert_to(',"prevHash":"', 'UTF8') THEN
            RAISE EXCEPTION 'audit append: row % has no leaf cut inside its head', i
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        leaves := leaves || sha256('\x00'::bytea || substring(v_head FROM 1 FOR v_cut)
            || convert_to(',"leafVersion":1', 'UTF8')
            || substring(v_head FROM v_cut + 1 FOR octet_length(v_head) - v_cut - 13)
            || convert_to(',"seq":', 'UTF8') || v_text
            || convert_to(',"subjectIdDigest":'
                          || coalesce('"' || p_subject_id_digests[i] || '"', 'null'), 'UTF8')
            || p_tails[i]);
    END LOOP;
    INSERT INTO audit_log (tenant_id, seq, id, action, entity_type, entity_id,
        entity_id_digest, entity_id_salt, actor, changes, personal, personal_salts,
        personal_digests, prev_hash, integrity_hash, created_at, subject_id,
        subject_id_salt, subject_id_digest, leaf_hash)
    SELECT p_tenant, * FROM unnest(seqs, p_ids, p_actions, p_entity_types, p_entity_ids,
        p_entity_id_digests, p_entity_id_salts, p_actors, p_changes, p_personal,
        p_personal_salts, p_personal_digests, prevs, hashes, p_created_at, p_subject_ids,
        p_subject_id_salts, p_subject_id_digests, leaves);
    UPDATE audit_chain_head h SET seq = v_seq, head_hash = v_hash
     WHERE h.tenant_id = p_tenant;
    RETURN QUERY SELECT * FROM unnest(seqs, prevs, hashes);
END
$fn$;

REVOKE ALL ON FUNCTION kaireon_audit_append(text, uuid[], text[], text[], text[], text[], text[],
    text[], jsonb[], jsonb[], jsonb[], jsonb[], timestamptz[], text[], bytea[], bytea[], text[],
    text[], integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_audit_append(text, uuid[], text[], text[], text[], text[],
    text[], text[], jsonb[], jsonb[], jsonb[], jsonb[], timestamptz[], text[], bytea[], bytea[],
    text[], text[], integer[]) TO kaireon_app;

-- 0238's append as a statement of its own, with the same new arrays.
CREATE FUNCTION kaireon_audit_append_alone(
    p_tenant text, p_ids uuid[], p_actions text[], p_entity_types text[], p_entity_ids text[],
    p_entity_id_digests text[], p_entity_id_salts text[], p_actors text[], p_changes jsonb[],
    p_personal jsonb[], p_personal_salts jsonb[], p_personal_digests jsonb[],
    p_created_at timestamptz[], p_subject_ids text[], p_heads bytea[], p_tails bytea[],
    p_subject_id_salts text[], p_subject_id_digests text[], p_leaf_cuts integer[])
    RETURNS TABLE (seq bigint, prev_hash text, integrity_hash text)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
BEGIN
    PERFORM set_config('kaireon.tenant_id', p_tenant, true);
    RETURN QUERY SELECT a.seq, a.prev_hash, a.integrity_hash FROM kaireon_audit_append(
        p_tenant, p_ids, p_actions, p_entity_types, p_entity_ids, p_entity_id_digests,
        p_entity_id_salts, p_actors, p_changes, p_personal, p_personal_salts,
        p_personal_digests, p_created_at, p_subject_ids, p_heads, p_tails,
        p_subject_id_salts, p_subject_id_digests, p_leaf_cuts) AS a;
END
$fn$;

REVOKE ALL ON FUNCTION kaireon_audit_append_alone(
    text, uuid[], text[], text[], text[], text[], text[], text[], jsonb[], jsonb[], jsonb[],
    jsonb[], timestamptz[], text[], bytea[], bytea[], text[], text[], integer[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_audit_append_alone(
    text, uuid[], text[], text[], text[], text[], text[], text[], jsonb[], jsonb[], jsonb[],
    jsonb[], timestamptz[], text[], bytea[], bytea[], text[], text[], integer[])
    TO kaireon_app;

-- 0234's chaining at COMMIT, passing the new columns on.
CREATE OR REPLACE FUNCTION kaireon_audit_chain_pending() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
DECLARE
    previous text := current_setting('kaireon.tenant_id', true);
    taken record;
BEGIN
    PERFORM set_config('kaireon.tenant_id', NEW.tenant_id, true);
    WITH gone AS (
        DELETE FROM audit_pending p
         WHERE p.txid = pg_current_xact_id() AND p.tenant_id = NEW.tenant_id
        RETURNING p.*
    )
    SELECT count(*) AS n,
           array_agg(id ORDER BY ord) AS ids, array_agg(action ORDER BY ord) AS actions,
           array_agg(entity_type ORDER BY ord) AS entity_types,
           array_agg(entity_id ORDER BY ord) AS entity_ids,
           array_agg(entity_id_digest ORDER BY ord) AS entity_id_digests,
           array_agg(entity_id_salt ORDER BY ord) AS entity_id_salts,
           array_agg(actor ORDER BY ord) AS actors, array_agg(changes ORDER BY ord) AS changes,
           array_agg(personal ORDER BY ord) AS personal,
           array_agg(personal_salts ORDER BY ord) AS personal_salts,
           array_agg(personal_digests ORDER BY ord) AS personal_digests,
           array_agg(created_at ORDER BY ord) AS created_at,
           array_agg(subject_id ORDER BY ord) AS subject_ids,
           array_agg(head ORDER BY ord) AS heads, array_agg(tail ORDER BY ord) AS tails,
           array_agg(subject_id_salt ORDER BY ord) AS subject_id_salts,
           array_agg(subject_id_digest ORDER BY ord) AS subject_id_digests,
           array_agg(leaf_cut ORDER BY ord) AS leaf_cuts
      INTO taken
      FROM gone;
    IF taken.n > 0 THEN
        PERFORM 1 FROM kaireon_audit_append(
            NEW.tenant_id, taken.ids, taken.actions, taken.entity_types, taken.entity_ids,
            taken.entity_id_digests, taken.entity_id_salts, taken.actors, taken.changes,
            taken.personal, taken.personal_salts, taken.personal_digests, taken.created_at,
            taken.subject_ids, taken.heads, taken.tails, taken.subject_id_salts,
            taken.subject_id_digests, taken.leaf_cuts);
    END IF;
    PERFORM set_config('kaireon.tenant_id', coalesce(previous, ''), true);
    RETURN NULL;
END
$fn$;
