-- Per-subject delivery order (issue #20; docs/REQUESTS.md).
--
-- A processor must see a subject's events in the order they were queued (an
-- erasure after a later correction must not arrive first). `seq` orders the
-- outbox; the claim offers only the earliest pending event per (recipient,
-- subject). Delivered or dead events no longer block the ones after them.
ALTER TABLE processor_outbox ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;

CREATE INDEX processor_outbox_pending_subject_idx
    ON processor_outbox (tenant_id, recipient_id, subject_id, seq) WHERE status = 'pending';

CREATE OR REPLACE FUNCTION kaireon_processor_claim_delivery(p_lease_seconds double precision)
    RETURNS TABLE (tenant_id text, id uuid)
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    UPDATE processor_outbox o
       SET next_attempt_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
           attempts = o.attempts + 1
      FROM (SELECT c.tenant_id, c.id FROM processor_outbox c
             WHERE c.status = 'pending' AND c.next_attempt_at <= clock_timestamp()
               -- An earlier pending event of the same subject to the same
               -- recipient (due, leased or backing off) goes first.
               AND NOT EXISTS (
                   SELECT 1 FROM processor_outbox e
                    WHERE e.tenant_id = c.tenant_id AND e.recipient_id = c.recipient_id
                      AND e.subject_id = c.subject_id AND e.status = 'pending'
                      AND e.seq < c.seq)
             ORDER BY c.next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED) due
     WHERE o.tenant_id = due.tenant_id AND o.id = due.id
    RETURNING o.tenant_id, o.id
$$;
