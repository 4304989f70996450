-- Settlement of erasure propagation (issue #20; docs/REQUESTS.md).
--
-- An erasure request that queued processor events stays `in_progress` until
-- every event is settled: acknowledged (a 2xx answer, its time in
-- delivered_at) or waived by an admin with an audited reason. A dead event is
-- not settled: it holds the request open until it is waived.
ALTER TABLE processor_outbox
    ADD COLUMN request_id    uuid,
    ADD COLUMN waived_by     text,
    ADD COLUMN waived_reason text,
    ADD COLUMN waived_at     timestamptz;

ALTER TABLE processor_outbox DROP CONSTRAINT processor_outbox_status_check;
ALTER TABLE processor_outbox ADD CONSTRAINT processor_outbox_status_check
    CHECK (status IN ('pending', 'delivered', 'dead', 'waived'));
ALTER TABLE processor_outbox ADD CONSTRAINT processor_outbox_waiver_check
    CHECK ((status = 'waived') = (waived_reason IS NOT NULL));

CREATE INDEX processor_outbox_request_idx ON processor_outbox (tenant_id, request_id)
    WHERE request_id IS NOT NULL;

-- The last event of a request settled: the request is completed, in the
-- settling transaction (the delivery worker's or the waiver's). Runs as the
-- updating role, under RLS.
CREATE FUNCTION kaireon_processor_outbox_settled()
    RETURNS trigger
    LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM processor_outbox o
         WHERE o.tenant_id = NEW.tenant_id AND o.request_id = NEW.request_id
           AND o.status NOT IN ('delivered', 'waived'))
    THEN
        UPDATE subject_request
           SET state = 'completed', updated_at = now()
         WHERE tenant_id = NEW.tenant_id AND id = NEW.request_id AND state = 'in_progress';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER processor_outbox_completes_subject_request
    AFTER UPDATE OF status ON processor_outbox
    FOR EACH ROW WHEN (NEW.request_id IS NOT NULL AND NEW.status IN ('delivered', 'waived')
                       AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION kaireon_processor_outbox_settled();
