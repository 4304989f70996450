-- The end of a flow run and the recorder's last events in one statement
-- (issue #22, StartRun cost).
--
-- A short run's node events were still queued when it ended: the recorder
-- flushed them (kaireon_flow_write_batch, one round trip) and the executor then
-- ended the run (kaireon_flow_finish_run, another). This function is both, in
-- that order, in one statement: the events and their nodes' status (behind the
-- attempt fence), then the run's state, its run_finished event and one NOTIFY
-- (the two functions' identical notifications are folded into one at commit).
--
-- The batch turns synchronous_commit off for its transaction (events are
-- informational); the run's end is not, so the setting is put back before the
-- end is written, and the commit keeps the server's durability.
CREATE FUNCTION kaireon_flow_end_run(
    p_tenant text, p_run_id text, p_attempt integer, p_events jsonb, p_state text,
    p_error text, p_ended_at timestamptz, p_seq bigint, p_channel text, p_payload text)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
DECLARE
    durability text := current_setting('synchronous_commit');
BEGIN
    PERFORM kaireon_flow_write_batch(p_tenant, p_run_id, p_attempt, p_events,
                                     p_channel, p_payload);
    PERFORM set_config('synchronous_commit', durability, true);
    RETURN kaireon_flow_finish_run(p_tenant, p_run_id, p_attempt, p_state, p_error,
                                   p_ended_at, p_seq, p_channel, p_payload);
END
$fn$;
REVOKE ALL ON FUNCTION kaireon_flow_end_run(text, text, integer, jsonb, text, text, timestamptz, bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_flow_end_run(text, text, integer, jsonb, text, text, timestamptz, bigint, text, text)
    TO kaireon_app;
