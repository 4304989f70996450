-- Events per processor (issue #20), and its signing scheme (Standard Webhooks
-- v1 HMAC or v1a Ed25519). A processor subscribes to event types,
-- "subject.erased" by default (the erasure propagation of 0151), and may add
-- "subject.exported" (a DSAR export of the subject completed) and
-- "subject.legal_hold" (a legal hold on the subject placed or released).
--
-- The two new events are queued by triggers in the transaction that makes
-- them true (the DSAR worker's completion, the hold's insert or delete), as
-- the erasure queues its own: no event without its change, no change without
-- its events. Only subject.erased events carry a request id, so only they
-- count towards an erasure request's settlement (0153). The payloads are
-- Standard Webhooks event objects, as requests/processors.py writes them.

ALTER TABLE processor_recipient
    ADD COLUMN events text[] NOT NULL DEFAULT ARRAY['subject.erased']
        CHECK (cardinality(events) >= 1 AND events <@ ARRAY['subject.erased', 'subject.exported',
                                                              'subject.legal_hold']),
    -- How its events are signed, from the stored secret's prefix
    -- (requests/webhooks.py): readable without reading the secret.
    ADD COLUMN signing_scheme text NOT NULL GENERATED ALWAYS AS (
        CASE WHEN signing_secret LIKE 'whsk\_%' THEN 'ed25519' ELSE 'hmac' END) STORED;

-- SECURITY INVOKER: runs as the writer of the triggering row, whose tenant
-- setting (row-level security) names that row's tenant.
CREATE FUNCTION kaireon_processor_queue(p_tenant text, p_type text, p_subject text,
                                        p_data jsonb)
    RETURNS void
    LANGUAGE sql SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
    INSERT INTO processor_outbox (tenant_id, recipient_id, event_type, subject_id, payload)
    SELECT p.tenant_id, p.id, p_type, p_subject,
           jsonb_build_object(
               'type', p_type,
               'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'data', jsonb_build_object('subjectId', p_subject) || p_data)::text
      FROM processor_recipient p
     WHERE p.tenant_id = p_tenant AND p_type = ANY (p.events);
$fn$;

CREATE FUNCTION kaireon_processor_export_done() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
BEGIN
    PERFORM kaireon_processor_queue(NEW.tenant_id, 'subject.exported', NEW.subject_id,
                                    jsonb_build_object('dsarRequestId', NEW.id));
    RETURN NULL;
END
$fn$;

CREATE TRIGGER dsar_request_notifies_processors
    AFTER UPDATE OF status ON dsar_request
    FOR EACH ROW WHEN (NEW.status = 'completed' AND OLD.status IS DISTINCT FROM 'completed')
    EXECUTE FUNCTION kaireon_processor_export_done();

CREATE FUNCTION kaireon_processor_legal_hold() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM kaireon_processor_queue(NEW.tenant_id, 'subject.legal_hold', NEW.customer_id,
                                        jsonb_build_object('hold', 'placed'));
    ELSE
        PERFORM kaireon_processor_queue(OLD.tenant_id, 'subject.legal_hold', OLD.customer_id,
                                        jsonb_build_object('hold', 'released'));
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER legal_hold_notifies_processors
    AFTER INSERT OR DELETE ON legal_hold
    FOR EACH ROW EXECUTE FUNCTION kaireon_processor_legal_hold();
