-- Audit rows chained inside COMMIT (issue #22: small DSAR exports).
--
-- An append (kaireon_audit_append, 0231) locks the tenant's chain head until
-- its transaction ends, so the lock spans the client's round trip from the
-- append to its COMMIT: on a busy server about 6.7 ms per append, and every
-- audited write of the tenant queues behind it (35 ms of waiting per append
-- at 150 appends/s; perf/baselines/2026-12-05-history-costs.md).
--
-- A caller that needs nothing of its row before COMMIT (not its seq, not its
-- hash) writes it here instead, unchained, without any lock; the deferred
-- constraint trigger below chains the transaction's rows of that tenant when
-- the transaction commits, with the same kaireon_audit_append, from the same
-- canonical content (made in Python before, split around the chain). The head
-- is then held by PostgreSQL alone, from the trigger to the end of the commit.
-- A rolled-back transaction leaves nothing here; a committed one leaves its
-- rows in audit_log only.

CREATE TABLE audit_pending (
    tenant_id         text        NOT NULL,
    ord               bigint GENERATED ALWAYS AS IDENTITY,
    -- The writing transaction: its rows are chained by its own COMMIT only.
    txid              xid8        NOT NULL DEFAULT pg_current_xact_id(),
    id                uuid        NOT NULL,
    action            text        NOT NULL,
    entity_type       text        NOT NULL,
    entity_id         text,
    entity_id_digest  text,
    entity_id_salt    text,
    actor             text        NOT NULL,
    changes           jsonb       NOT NULL,
    personal          jsonb,
    personal_salts    jsonb,
    personal_digests  jsonb,
    created_at        timestamptz NOT NULL,
    subject_id        text,
    head              bytea       NOT NULL,
    tail              bytea       NOT NULL,
    PRIMARY KEY (tenant_id, ord)
);
-- Rows live only inside their transaction, but dead ones wait for vacuum:
-- the trigger finds its own through this index, never by a scan.
CREATE INDEX audit_pending_txid_idx ON audit_pending (txid, tenant_id);

ALTER TABLE audit_pending ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_pending TO kaireon_app
    USING (tenant_id = current_setting('kaireon.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('kaireon.tenant_id', true));
GRANT SELECT, INSERT, DELETE ON audit_pending TO kaireon_app;

-- One firing per pending row, all at COMMIT: the first of a tenant takes all
-- of the transaction's rows of that tenant (in the order written) and chains
-- them; the others find none left.
CREATE FUNCTION kaireon_audit_chain_pending() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
DECLARE
    previous text := current_setting('kaireon.tenant_id', true);
    taken record;
BEGIN
    -- The row's tenant for the policies, whatever the transaction set last (a
    -- transaction that moved on to another tenant must not leave rows behind).
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
           array_agg(head ORDER BY ord) AS heads, array_agg(tail ORDER BY ord) AS tails
      INTO taken
      FROM gone;
    IF taken.n > 0 THEN
        PERFORM 1 FROM kaireon_audit_append(
            NEW.tenant_id, taken.ids, taken.actions, taken.entity_types, taken.entity_ids,
            taken.entity_id_digests, taken.entity_id_salts, taken.actors, taken.changes,
            taken.personal, taken.personal_salts, taken.personal_digests, taken.created_at,
            taken.subject_ids, taken.heads, taken.tails);
    END IF;
    PERFORM set_config('kaireon.tenant_id', coalesce(previous, ''), true);
    RETURN NULL;
END
$fn$;

CREATE CONSTRAINT TRIGGER audit_pending_chained_at_commit AFTER INSERT ON audit_pending
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION kaireon_audit_chain_pending();
