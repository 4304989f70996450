-- How long until the next claimable webhook delivery of any tenant is due, by
-- this database's clock (no row when none is pending).
--
-- A delivery worker that claims nothing sleeps that long (bounded by its poll).
-- It used to wake at a retry it had scheduled by its own clock, computed after
-- the failure's commit, and then forget it: with uvloop, whose clock moves in
-- whole milliseconds, that wake could come a fraction of a millisecond before
-- the row was due here, find nothing to claim, and leave the retry to the
-- 30 s poll. Asking the database makes its clock the only one; it also finds
-- the retries other processes scheduled and the leases of workers that died.
--
-- Claimable as kaireon_processor_claim_delivery has it (0152): an event held
-- back behind an earlier pending one of the same subject to the same recipient
-- is not due however old, or a worker would ask again at once, and again.
CREATE FUNCTION kaireon_processor_next_due_seconds()
    RETURNS SETOF double precision
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT greatest(0, extract(epoch FROM c.next_attempt_at - clock_timestamp()))::double precision
      FROM processor_outbox c
     WHERE c.status = 'pending'
       AND NOT EXISTS (
           SELECT 1 FROM processor_outbox e
            WHERE e.tenant_id = c.tenant_id AND e.recipient_id = c.recipient_id
              AND e.subject_id = c.subject_id AND e.status = 'pending'
              AND e.seq < c.seq)
     ORDER BY c.next_attempt_at
     LIMIT 1
$$;
REVOKE ALL ON FUNCTION kaireon_processor_next_due_seconds() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_processor_next_due_seconds() TO kaireon_app;
