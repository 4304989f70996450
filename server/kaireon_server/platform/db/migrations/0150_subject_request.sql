-- Data-subject request lifecycle (RequestService, issue #20, docs/REQUESTS.md).
--
-- One row per request: its state, the regulation whose deadline applies, and
-- the due date kept current (receipt + period + extensions + completed
-- pauses), so "due before" and "overdue" lists are index range scans.
CREATE TABLE subject_request (
    tenant_id              text        NOT NULL,
    id                     uuid        NOT NULL DEFAULT gen_random_uuid(),
    kind                   text        NOT NULL CHECK (kind IN ('access', 'erasure')),
    subject_id             text        NOT NULL CHECK (char_length(subject_id) BETWEEN 1 AND 256),
    regulation             text        NOT NULL CHECK (regulation IN ('gdpr', 'uk_gdpr', 'ccpa', 'lgpd')),
    state                  text        NOT NULL CHECK (state IN (
                               'received', 'identity_verification', 'awaiting_approval',
                               'in_progress', 'requires_input', 'paused',
                               'completed', 'denied', 'cancelled')),
    origin                 text        NOT NULL CHECK (origin IN ('lifecycle', 'direct')),
    received_at            timestamptz NOT NULL,
    due_date               date        NOT NULL,
    extension_months       integer     NOT NULL DEFAULT 0 CHECK (extension_months >= 0),
    extension_days         integer     NOT NULL DEFAULT 0 CHECK (extension_days >= 0),
    paused_days            integer     NOT NULL DEFAULT 0 CHECK (paused_days >= 0),
    -- While paused: since when, and the state to go back to.
    paused_at              timestamptz,
    paused_from            text,
    verification_method    text,
    verification_reference text,
    verified_at            timestamptz,
    dsar_request_id        uuid,
    created_by             text        NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK ((paused_at IS NULL) = (state NOT IN ('requires_input', 'paused')))
);

-- The lists (requests/repository.py, tests/platform/test_generic_plans.py).
CREATE INDEX subject_request_list_idx ON subject_request (tenant_id, received_at DESC, id DESC);
CREATE INDEX subject_request_state_idx
    ON subject_request (tenant_id, state, received_at DESC, id DESC);
CREATE INDEX subject_request_due_idx ON subject_request (tenant_id, due_date, id)
    WHERE state IN ('received', 'identity_verification', 'awaiting_approval', 'in_progress');
CREATE INDEX subject_request_state_due_idx ON subject_request (tenant_id, state, due_date, id);
-- Erasure counts the subject's retained rows; the DSAR trigger finds its request.
CREATE INDEX subject_request_subject_idx ON subject_request (tenant_id, subject_id);
CREATE INDEX subject_request_dsar_idx ON subject_request (tenant_id, dsar_request_id)
    WHERE dsar_request_id IS NOT NULL;

-- Tenant overrides of the default deadline policies (requests/policy.py).
CREATE TABLE subject_request_policy (
    tenant_id            text    NOT NULL,
    regulation           text    NOT NULL CHECK (regulation IN ('gdpr', 'uk_gdpr', 'ccpa', 'lgpd')),
    period_months        integer NOT NULL CHECK (period_months BETWEEN 0 AND 12),
    period_days          integer NOT NULL CHECK (period_days BETWEEN 0 AND 366),
    max_extension_months integer NOT NULL CHECK (max_extension_months BETWEEN 0 AND 12),
    max_extension_days   integer NOT NULL CHECK (max_extension_days BETWEEN 0 AND 366),
    require_verification boolean NOT NULL,
    updated_by           text    NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, regulation),
    CHECK ((period_months = 0) <> (period_days = 0))
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['subject_request', 'subject_request_policy']
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

-- An access request approved (or made directly) is completed when its DSAR
-- export completes, in the worker's transaction, which also writes the
-- dsar_export_completed audit row. Runs as the updating role, under RLS.
CREATE FUNCTION kaireon_subject_request_export_done()
    RETURNS trigger
    LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
BEGIN
    UPDATE subject_request
       SET state = 'completed', updated_at = now()
     WHERE tenant_id = NEW.tenant_id AND dsar_request_id = NEW.id AND state = 'in_progress';
    RETURN NULL;
END
$$;

CREATE TRIGGER dsar_request_completes_subject_request
    AFTER UPDATE OF status ON dsar_request
    FOR EACH ROW WHEN (NEW.status = 'completed' AND OLD.status IS DISTINCT FROM 'completed')
    EXECUTE FUNCTION kaireon_subject_request_export_done();
