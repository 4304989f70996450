-- Bundles as stored, signed bytes (issue #22).
--
-- A bundle is a function of the rows it cites and of the build (bundle.py):
-- building it again reads the decision, the catalogue as of the decision time
-- and the audit rows about them (most of an emission's PostgreSQL CPU), then
-- canonicalises and signs. Here a bundle's bytes, digest and signature are
-- kept, keyed by decision and build key (the build identity, the signing key,
-- the provenance code and the schema: provenance/stored.py), and served again
-- while nothing they depend on changed. A fresh build of the same rows gives
-- the same bytes (the signature is the kept one's).
--
-- Kept at a decision's second emission, not its first: keeping one costs
-- PostgreSQL about what reading it does (measured: 0.36-0.40 ms of CPU per
-- keep, 0.45 ms per read, on this project's machines), so a bundle read once
-- would pay twice for nothing. From the third emission on it is one read of
-- the kept row.
--
-- What invalidates a stored bundle, in the writer's own transaction:
-- - the decision trace deleted (an erasure): the foreign key's ON DELETE
--   CASCADE; an erased customer's bundle is never served;
-- - the decision trace updated: its bundle, by a trigger below;
-- - a catalogue row (offer, rule, contact_policy, ml_model, fairness_report)
--   written: every stored bundle of the tenant (catalogue writes are rare);
-- - an audit row a bundle could cite written, updated or deleted: about the
--   decision (entity decision / decision_trace): that decision's bundle; about
--   an artifact or a rule set (ml_model, offer, rule, contact_policy,
--   fairness_report, rule_set): every stored bundle of the tenant. Emission
--   rows (decision_provenance_emit) are never cited; audit rows about
--   customers, runs or requests cannot be.
--
-- A bundle built from a snapshot is stored only if none of those writes
-- happened since a point before that snapshot (kaireon_provenance_keep).
-- Every such write except the erasure first takes the tenant's provenance
-- advisory lock *shared* (until it commits) and bumps the tenant's generation
-- (audit rows only when a bundle may cite them: emission rows and rows about
-- customers, runs or requests never do). keep() tries the same lock
-- *exclusive* without waiting (a writer in flight, or another keep: keep
-- nothing this time), and compares the generation with the one read before
-- the snapshot; the erasure is caught by the decision's own row (FOR KEY
-- SHARE SKIP LOCKED, then the foreign key). A writer that comes later waits
-- for keep()'s one statement, then deletes the stored row in its own
-- transaction. So a stored bundle is never staler than a fresh build would be.
--
-- Why that way round: writers take locks in either order (a decision's audit
-- row takes the audit chain head, then this lock; an erasure's redaction this
-- lock, then the chain head). Shared, they never wait for each other; a
-- writer waits only for a keep() in flight, which never waits itself, so no
-- cycle can form. An advisory lock, not a row lock: many share locks on one
-- row cost PostgreSQL a multixact each.

CREATE TABLE provenance_bundle_store (
    tenant_id text NOT NULL,
    decision_id text NOT NULL,
    build_key text NOT NULL,
    body bytea NOT NULL,
    digest_sha256 text NOT NULL,
    signature text NOT NULL,
    model_count integer NOT NULL,
    audit_log_count integer NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, decision_id),
    FOREIGN KEY (tenant_id, decision_id) REFERENCES decision_trace (tenant_id, id)
        ON DELETE CASCADE
);

-- Bumped by every write of the tenant that could change a bundle (see above).
CREATE TABLE provenance_catalogue_generation (
    tenant_id text PRIMARY KEY,
    generation bigint NOT NULL
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['provenance_bundle_store', 'provenance_catalogue_generation']
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

-- The writers' side. SECURITY INVOKER: a writer's row-level security applies
-- (its tenant setting names the tenant of the row it writes).

CREATE FUNCTION kaireon_provenance_lock_key(p_tenant text) RETURNS bigint
    LANGUAGE sql IMMUTABLE SET search_path = public, pg_temp
AS $fn$
    SELECT hashtextextended('kaireon.provenance:' || p_tenant, 0)
$fn$;

-- First in every such writer's transaction: the lock orders the writer after a
-- keep() in flight, so the deletes that follow see the row it kept.
CREATE FUNCTION kaireon_provenance_bump(p_tenant text) RETURNS void
    LANGUAGE sql SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
    SELECT pg_advisory_xact_lock_shared(kaireon_provenance_lock_key(p_tenant));
    INSERT INTO provenance_catalogue_generation AS g (tenant_id, generation)
    VALUES (p_tenant, 1)
    ON CONFLICT (tenant_id) DO UPDATE SET generation = g.generation + 1;
$fn$;

CREATE FUNCTION kaireon_provenance_forget_tenant(p_tenant text) RETURNS void
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
BEGIN
    PERFORM kaireon_provenance_bump(p_tenant);
    DELETE FROM provenance_bundle_store WHERE tenant_id = p_tenant;
END
$fn$;

CREATE FUNCTION kaireon_provenance_catalogue_written() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM kaireon_provenance_forget_tenant(OLD.tenant_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM kaireon_provenance_forget_tenant(NEW.tenant_id);
    END IF;
    RETURN NULL;
END
$fn$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['offer', 'rule', 'contact_policy', 'ml_model', 'fairness_report']
    LOOP
        EXECUTE format(
            'CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %I '
            'FOR EACH ROW EXECUTE FUNCTION kaireon_provenance_catalogue_written()',
            t || '_forgets_stored_bundles', t
        );
    END LOOP;
END
$$;

CREATE FUNCTION kaireon_provenance_decision_updated() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
BEGIN
    -- Rare (traces are written once).
    PERFORM kaireon_provenance_bump(OLD.tenant_id);
    DELETE FROM provenance_bundle_store WHERE tenant_id = OLD.tenant_id AND decision_id = OLD.id;
    IF (NEW.tenant_id, NEW.id) IS DISTINCT FROM (OLD.tenant_id, OLD.id) THEN
        PERFORM kaireon_provenance_bump(NEW.tenant_id);
        DELETE FROM provenance_bundle_store
         WHERE tenant_id = NEW.tenant_id AND decision_id = NEW.id;
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER decision_trace_forgets_stored_bundle AFTER UPDATE ON decision_trace
    FOR EACH ROW EXECUTE FUNCTION kaireon_provenance_decision_updated();

-- Audit rows a bundle may cite (0160's entity CTE and rule-set publication):
-- never its own emissions. The one list; the triggers below filter on it.
CREATE FUNCTION kaireon_provenance_citable(p_action text, p_entity_type text)
    RETURNS boolean
    LANGUAGE sql IMMUTABLE
AS $fn$
    SELECT p_action <> 'decision_provenance_emit'
       AND p_entity_type IN ('decision', 'decision_trace', 'ml_model', 'offer', 'rule',
                             'contact_policy', 'fairness_report', 'rule_set')
$fn$;

CREATE FUNCTION kaireon_provenance_audit_forgets(p_tenant text, p_action text,
                                                 p_entity_type text, p_entity_id text)
    RETURNS void
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
BEGIN
    IF NOT kaireon_provenance_citable(p_action, p_entity_type) THEN
        RETURN;
    ELSIF p_entity_type IN ('decision', 'decision_trace') THEN
        PERFORM kaireon_provenance_bump(p_tenant);
        DELETE FROM provenance_bundle_store
         WHERE tenant_id = p_tenant AND decision_id = p_entity_id;
    ELSE  -- an artifact or a rule set: any bundle of the tenant may cite it
        PERFORM kaireon_provenance_forget_tenant(p_tenant);
    END IF;
END
$fn$;

CREATE FUNCTION kaireon_provenance_audit_written() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM kaireon_provenance_audit_forgets(OLD.tenant_id, OLD.action,
                                                 OLD.entity_type, OLD.entity_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM kaireon_provenance_audit_forgets(NEW.tenant_id, NEW.action,
                                                 NEW.entity_type, NEW.entity_id);
    END IF;
    RETURN NULL;
END
$fn$;

-- Every audit append passes here: the WHEN clauses keep the rows no bundle
-- can cite (emissions, customers, runs, requests: nearly all of them) from
-- calling the trigger function at all.
CREATE TRIGGER audit_log_insert_forgets_stored_bundles AFTER INSERT ON audit_log
    FOR EACH ROW WHEN (kaireon_provenance_citable(NEW.action, NEW.entity_type))
    EXECUTE FUNCTION kaireon_provenance_audit_written();
CREATE TRIGGER audit_log_update_forgets_stored_bundles AFTER UPDATE ON audit_log
    FOR EACH ROW WHEN (kaireon_provenance_citable(OLD.action, OLD.entity_type)
                       OR kaireon_provenance_citable(NEW.action, NEW.entity_type))
    EXECUTE FUNCTION kaireon_provenance_audit_written();
CREATE TRIGGER audit_log_delete_forgets_stored_bundles AFTER DELETE ON audit_log
    FOR EACH ROW WHEN (kaireon_provenance_citable(OLD.action, OLD.entity_type))
    EXECUTE FUNCTION kaireon_provenance_audit_written();

-- The reader's side, one statement each (the tenant set for the statement,
-- as kaireon_provenance_bundle does; SECURITY INVOKER, under the policies).

-- An emission's read, one statement: the stored bundle of this build and the
-- decision's customer (for the emission's audit row); or, when there is none,
-- the tenant's generation (what keep() compares against) and whether the
-- decision was emitted before (then the caller keeps this one), then, in a
-- later snapshot, everything kaireon_provenance_bundle reads. The caller
-- names the columns: the stored ones, the generation, emitted, then the
-- bundle's (provenance/stored.py).
CREATE FUNCTION kaireon_provenance_emission(p_tenant text, p_decision_id text,
                                            p_build_key text)
    RETURNS SETOF record
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
DECLARE
    previous text := current_setting('kaireon.tenant_id', true);
    kept record;
    generation bigint;
BEGIN
    PERFORM set_config('kaireon.tenant_id', p_tenant, true);
    SELECT s.body, s.digest_sha256, s.signature, s.model_count, s.audit_log_count,
           d.customer_id
      INTO kept
      FROM provenance_bundle_store s
      JOIN decision_trace d ON d.tenant_id = s.tenant_id AND d.id = s.decision_id
     WHERE s.tenant_id = p_tenant AND s.decision_id = p_decision_id
       AND s.build_key = p_build_key;
    IF FOUND THEN
        RETURN QUERY SELECT kept.body, kept.digest_sha256, kept.signature, kept.model_count,
                            kept.audit_log_count, kept.customer_id, NULL::bigint,
                            NULL::boolean, NULL::text, NULL::text, NULL::timestamptz, NULL::text, NULL::text,
                            NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::jsonb,
                            NULL::record[], NULL::record[], NULL::record[], NULL::record[],
                            NULL::record, NULL::record[];
    ELSE
        -- Read before the bundle's own snapshot (the next statement's).
        SELECT g.generation INTO generation
          FROM provenance_catalogue_generation g WHERE g.tenant_id = p_tenant;
        RETURN QUERY
            SELECT NULL::bytea, NULL::text, NULL::text, NULL::integer, NULL::integer,
                   NULL::text, coalesce(generation, 0),
                   EXISTS (SELECT 1 FROM audit_log a
                            WHERE a.tenant_id = p_tenant AND a.entity_type = 'decision'
                              AND a.entity_id = p_decision_id
                              AND a.action = 'decision_provenance_emit'),
                   b.*
              FROM kaireon_provenance_bundle(p_tenant, p_decision_id) AS b(
                   id text, customer_id text, decided_at timestamptz, channel text,
                   selected_offer_id text, candidates jsonb, models jsonb,
                   qualification_results jsonb, contact_policy_results jsonb,
                   attributes jsonb, offer_rows record[], rule_rows record[],
                   policy_rows record[], model_rows record[], fairness_row record,
                   audit_rows record[]);
    END IF;
    PERFORM set_config('kaireon.tenant_id', coalesce(previous, ''), true);
END
$fn$;

-- Keep a bundle built from rows read after kaireon_provenance_emission answered
-- p_generation; false (nothing kept) when a write that could change it
-- committed since or is in flight, or the decision is gone.
CREATE FUNCTION kaireon_provenance_keep(
    p_tenant text, p_decision_id text, p_build_key text, p_body bytea, p_digest text,
    p_signature text, p_model_count integer, p_audit_log_count integer,
    p_generation bigint)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
DECLARE
    previous text := current_setting('kaireon.tenant_id', true);
    generation bigint;
BEGIN
    PERFORM set_config('kaireon.tenant_id', p_tenant, true);
    -- A kept bundle lost in a crash of PostgreSQL is only built again: its
    -- commit need not wait for the disk.
    PERFORM set_config('synchronous_commit', 'off', true);
    -- Nothing here waits: a writer in flight holds the decision's row or the
    -- tenant's lock until it commits; then nothing is kept (and no deadlock).
    -- The decision first (an erasure deleting it holds its row): once locked
    -- here it stays until this commit, so the foreign key's check passes.
    PERFORM 1 FROM decision_trace d
      WHERE d.tenant_id = p_tenant AND d.id = p_decision_id FOR KEY SHARE SKIP LOCKED;
    IF NOT FOUND THEN
        PERFORM set_config('kaireon.tenant_id', coalesce(previous, ''), true);
        RETURN false;
    END IF;
    IF NOT pg_try_advisory_xact_lock(kaireon_provenance_lock_key(p_tenant)) THEN
        PERFORM set_config('kaireon.tenant_id', coalesce(previous, ''), true);
        RETURN false;
    END IF;
    SELECT g.generation INTO generation FROM provenance_catalogue_generation g
     WHERE g.tenant_id = p_tenant;
    IF coalesce(generation, 0) IS DISTINCT FROM coalesce(p_generation, 0) THEN
        PERFORM set_config('kaireon.tenant_id', coalesce(previous, ''), true);
        RETURN false;
    END IF;
    INSERT INTO provenance_bundle_store AS s
           (tenant_id, decision_id, build_key, body, digest_sha256, signature, model_count,
            audit_log_count)
    VALUES (p_tenant, p_decision_id, p_build_key, p_body, p_digest, p_signature,
            p_model_count, p_audit_log_count)
    ON CONFLICT (tenant_id, decision_id) DO UPDATE
       SET build_key = EXCLUDED.build_key, body = EXCLUDED.body,
           digest_sha256 = EXCLUDED.digest_sha256, signature = EXCLUDED.signature,
           model_count = EXCLUDED.model_count, audit_log_count = EXCLUDED.audit_log_count,
           stored_at = now();
    PERFORM set_config('kaireon.tenant_id', coalesce(previous, ''), true);
    RETURN true;
END
$fn$;

REVOKE ALL ON FUNCTION kaireon_provenance_emission(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_provenance_emission(text, text, text) TO kaireon_app;
REVOKE ALL ON FUNCTION kaireon_provenance_keep(text, text, text, bytea, text, text, integer,
                                               integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_provenance_keep(text, text, text, bytea, text, text, integer,
                                                  integer, bigint) TO kaireon_app;
