-- Erasure propagation to processors (GDPR Art. 19; docs/REQUESTS.md).
--
-- A completed erasure writes one outbox row per registered processor in the
-- erasure's own transaction; delivery workers POST them, signed per Standard
-- Webhooks, with retries and backoff, and mark them delivered or dead.
CREATE TABLE processor_recipient (
    tenant_id      text        NOT NULL,
    id             uuid        NOT NULL DEFAULT gen_random_uuid(),
    name           text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    url            text        NOT NULL CHECK (char_length(url) BETWEEN 1 AND 2048),
    -- The shared HMAC secret ("whsec_" + base64): the server must hold it to sign.
    signing_secret text        NOT NULL,
    created_by     text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE processor_outbox (
    tenant_id       text        NOT NULL,
    -- Also the event's webhook-id (receivers deduplicate on it).
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    recipient_id    uuid        NOT NULL,
    event_type      text        NOT NULL,
    -- The data subject the event is about (the processor must erase them too).
    subject_id      text        NOT NULL,
    payload         text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, recipient_id) REFERENCES processor_recipient (tenant_id, id)
);

CREATE INDEX processor_outbox_due_idx ON processor_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX processor_outbox_recipient_idx ON processor_outbox (tenant_id, recipient_id, status);
CREATE INDEX processor_outbox_subject_idx ON processor_outbox (tenant_id, subject_id);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['processor_recipient', 'processor_outbox']
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

-- The workers' cross-tenant claim: the next due delivery of any tenant, leased
-- (next_attempt_at moved past the lease, the attempt counted) and committed
-- before the POST, so a worker that dies leaves it to be claimed again.
CREATE FUNCTION kaireon_processor_claim_delivery(p_lease_seconds double precision)
    RETURNS TABLE (tenant_id text, id uuid)
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    UPDATE processor_outbox o
       SET next_attempt_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
           attempts = o.attempts + 1
      FROM (SELECT c.tenant_id, c.id FROM processor_outbox c
             WHERE c.status = 'pending' AND c.next_attempt_at <= clock_timestamp()
             ORDER BY c.next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED) due
     WHERE o.tenant_id = due.tenant_id AND o.id = due.id
    RETURNING o.tenant_id, o.id
$$;
REVOKE ALL ON FUNCTION kaireon_processor_claim_delivery(double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_processor_claim_delivery(double precision) TO kaireon_app;

-- Wake the delivery workers when events are queued (at commit, once per
-- statement); they also poll now and then in case a notification is missed.
CREATE FUNCTION kaireon_processor_outbox_queued()
    RETURNS trigger
    LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
BEGIN
    -- Statement triggers fire for zero rows too (an erasure in a tenant
    -- without processors): wake nobody then.
    IF EXISTS (SELECT 1 FROM queued) THEN
        PERFORM pg_notify('kaireon_processor_outbox', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER processor_outbox_queued
    AFTER INSERT ON processor_outbox REFERENCING NEW TABLE AS queued
    FOR EACH STATEMENT EXECUTE FUNCTION kaireon_processor_outbox_queued();
