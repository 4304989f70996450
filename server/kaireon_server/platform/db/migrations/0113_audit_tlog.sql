-- The transparency log over the audit rows (issue #15, docs/AUDIT.md).
--
-- Each tenant's audit rows are the leaves of an RFC 9162 Merkle tree (leaf
-- index = seq - 1). The server integrates new rows in batches (audit/tlog.py):
-- it stores every perfect subtree hash it completes (audit_tlog_node, level 0 =
-- the leaf hashes), the compact range of the tree (audit_tlog_state), and every
-- checkpoint it publishes (audit_tlog_checkpoint), with witness cosignatures
-- beside them. Proofs are computed from stored hashes, never by re-hashing rows.
-- The linear hash chain stays as it is.

-- The data subject is committed to the leaf through a salted digest, like a
-- personal entity id: sha256(salt || JCS(subject_id)). to_jsonb(text)::text is
-- the RFC 8785 form of a string (the same escapes, lowercase \u00xx).
ALTER TABLE audit_log ADD COLUMN subject_id_digest text, ADD COLUMN subject_id_salt text;

-- 128-bit salts from two v4 UUIDs (244 random bits, gen_random_uuid uses the
-- strong random source); written first, the digest from it second.
UPDATE audit_log
   SET subject_id_salt = left(encode(sha256(convert_to(
           gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')), 'hex'), 32)
 WHERE subject_id IS NOT NULL;
UPDATE audit_log
   SET subject_id_digest = encode(sha256(convert_to(
           subject_id_salt || to_jsonb(subject_id)::text, 'UTF8')), 'hex')
 WHERE subject_id IS NOT NULL;

-- New rows get theirs at insert, whoever writes them; the digest never changes
-- afterwards, and redaction (subject_id set to NULL) drops the salt.
CREATE FUNCTION kaireon_audit_subject_digest()
    RETURNS trigger
    LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.subject_id IS NOT NULL THEN
            NEW.subject_id_salt := left(encode(sha256(convert_to(
                gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')), 'hex'), 32);
            NEW.subject_id_digest := encode(sha256(convert_to(
                NEW.subject_id_salt || to_jsonb(NEW.subject_id)::text, 'UTF8')), 'hex');
        ELSE
            NEW.subject_id_salt := NULL;
            NEW.subject_id_digest := NULL;
        END IF;
    ELSE
        NEW.subject_id_digest := OLD.subject_id_digest;
        IF NEW.subject_id IS NULL THEN
            NEW.subject_id_salt := NULL;
        ELSE
            NEW.subject_id_salt := OLD.subject_id_salt;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_log_subject_digest
    BEFORE INSERT OR UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION kaireon_audit_subject_digest();

-- Perfect subtree hashes: node (level, idx) covers leaves [idx * 2^level, (idx + 1) * 2^level).
CREATE TABLE audit_tlog_node (
    tenant_id text   NOT NULL,
    level     smallint NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx       bigint NOT NULL CHECK (idx >= 0),
    hash      bytea  NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (tenant_id, level, idx)
);

-- The integrated tree: its size and compact range ({"size", "hashes"}).
CREATE TABLE audit_tlog_state (
    tenant_id  text        PRIMARY KEY,
    size       bigint      NOT NULL CHECK (size >= 0),
    compact    jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every checkpoint the log published (the signed note text, or the bare body
-- when no log key is configured).
CREATE TABLE audit_tlog_checkpoint (
    tenant_id  text        NOT NULL,
    size       bigint      NOT NULL CHECK (size >= 0),
    root_hash  bytea       NOT NULL CHECK (length(root_hash) = 32),
    note       text        NOT NULL,
    signed     boolean     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, size)
);

-- Witness cosignature lines, verified against KAIREON_WITNESS_KEYS when submitted.
CREATE TABLE audit_tlog_cosignature (
    tenant_id  text        NOT NULL,
    size       bigint      NOT NULL,
    witness    text        NOT NULL,
    line       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, size, witness),
    FOREIGN KEY (tenant_id, size) REFERENCES audit_tlog_checkpoint (tenant_id, size)
);

-- Where incremental verification resumes: rows [0, size) verified against a checkpoint.
CREATE TABLE audit_tlog_verified (
    tenant_id   text        PRIMARY KEY,
    size        bigint      NOT NULL CHECK (size >= 0),
    verified_at timestamptz NOT NULL DEFAULT now()
);

-- Where the incremental chain check (VerifyChain) resumes: row `seq` verified with this hash.
CREATE TABLE audit_chain_verified (
    tenant_id   text        PRIMARY KEY,
    seq         bigint      NOT NULL CHECK (seq >= 0),
    head_hash   text        NOT NULL,
    verified_at timestamptz NOT NULL DEFAULT now()
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['audit_tlog_node', 'audit_tlog_state', 'audit_tlog_checkpoint',
                             'audit_tlog_cosignature', 'audit_tlog_verified',
                             'audit_chain_verified']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I TO kaireon_app '
            'USING (tenant_id = current_setting(''kaireon.tenant_id'', true)) '
            'WITH CHECK (tenant_id = current_setting(''kaireon.tenant_id'', true))',
            t
        );
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO kaireon_app', t);
    END LOOP;
END
$$;

-- Wake the integrators when a tenant's chain moves (delivered at commit, one per
-- transaction and tenant); they also poll now and then in case one is missed.
CREATE FUNCTION kaireon_audit_appended()
    RETURNS trigger
    LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
BEGIN
    PERFORM pg_notify('kaireon_audit_appended', NEW.tenant_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_chain_head_appended
    AFTER UPDATE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION kaireon_audit_appended();

-- The integrator's cross-tenant read: tenants whose chain is ahead of their tree (keys only).
CREATE FUNCTION kaireon_tlog_pending(p_limit integer)
    RETURNS TABLE (tenant_id text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT h.tenant_id FROM audit_chain_head h
      LEFT JOIN audit_tlog_state s ON s.tenant_id = h.tenant_id
     WHERE h.seq > coalesce(s.size, 0)
     ORDER BY h.tenant_id
     LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION kaireon_tlog_pending(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_tlog_pending(integer) TO kaireon_app;
