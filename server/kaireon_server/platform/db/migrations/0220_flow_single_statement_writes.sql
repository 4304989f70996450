-- A flow run's routine writes as one statement each (issue #22, StartRun cost).
--
-- A recorder flush and the end of a run each took a Database.transaction:
-- BEGIN, set_config(kaireon.tenant_id), the statements, COMMIT and the pool's
-- reset query, five to seven round trips for one or three statements. On this
-- project's machines a round trip's socket write is the largest single cost of
-- a short run. These functions are those statements with the tenant as an
-- argument, so the caller sends one statement outside any explicit transaction
-- (Database.single_statements: one round trip, no reset), as
-- kaireon_provenance_bundle (0160) does for a bundle's read.
--
-- SECURITY INVOKER: they run as kaireon_app, so the tenant_isolation policies
-- apply with the tenant of the argument, besides the statements' own
-- tenant_id filters. Setting the tenant is no new power: kaireon_app may call
-- set_config itself. The setting is put back at the end, so inside a caller's
-- transaction it does not outlive the call.

-- The recorder's flush (flow/repository.py, write_batch): p_events is a JSON
-- array of {seq, type, node_id, error, status, at}; every node takes the status
-- of its last event in the batch, behind the attempt fence. Events and status
-- are informational (checkpoints are the truth), so the commit does not wait
-- for the disk. The NOTIFY is delivered at commit.
CREATE FUNCTION kaireon_flow_write_batch(
    p_tenant text, p_run_id text, p_attempt integer, p_events jsonb,
    p_channel text, p_payload text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
DECLARE
    previous text := current_setting('kaireon.tenant_id', true);
BEGIN
    PERFORM set_config('kaireon.tenant_id', p_tenant, true);
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO flow_run_event
           (tenant_id, run_id, seq, attempt, type, node_id, error, status, created_at)
    SELECT p_tenant, p_run_id, e.seq, p_attempt, e.type, e.node_id, e.error, e.status, e.at
      FROM jsonb_to_recordset(p_events)
        AS e(seq bigint, type text, node_id text, error text, status jsonb, at timestamptz);
    UPDATE flow_run_node n
       SET state = l.status->>'state', attempts = (l.status->>'attempts')::integer,
           error = l.status->>'error', cache_key = l.status->>'cacheKey',
           output_digest = l.status->>'outputDigest',
           started_at = (l.status->>'startTime')::timestamptz,
           ended_at = (l.status->>'endTime')::timestamptz
      FROM (SELECT DISTINCT ON (e.node_id) e.node_id, e.status
              FROM jsonb_to_recordset(p_events) AS e(seq bigint, node_id text, status jsonb)
             ORDER BY e.node_id, e.seq DESC) AS l
     WHERE n.tenant_id = p_tenant AND n.run_id = p_run_id AND n.node_id = l.node_id
       AND EXISTS (SELECT 1 FROM flow_run r
                    WHERE r.tenant_id = p_tenant AND r.run_id = p_run_id
                      AND r.attempt = p_attempt);
    PERFORM pg_notify(p_channel, p_payload);
    PERFORM set_config('kaireon.tenant_id', coalesce(previous, ''), true);
END
$fn$;
REVOKE ALL ON FUNCTION kaireon_flow_write_batch(text, text, integer, jsonb, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_flow_write_batch(text, text, integer, jsonb, text, text)
    TO kaireon_app;

-- The end of attempt p_attempt (flow/executor.py, _finalize, when every node's
-- status is written already): the run's state, its run_finished event and the
-- NOTIFY, or nothing and false when the run is past that attempt (fenced).
CREATE FUNCTION kaireon_flow_finish_run(
    p_tenant text, p_run_id text, p_attempt integer, p_state text, p_error text,
    p_ended_at timestamptz, p_seq bigint, p_channel text, p_payload text)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
DECLARE
    previous text := current_setting('kaireon.tenant_id', true);
    finished boolean;
BEGIN
    PERFORM set_config('kaireon.tenant_id', p_tenant, true);
    UPDATE flow_run SET state = p_state, error = p_error, ended_at = p_ended_at
     WHERE tenant_id = p_tenant AND run_id = p_run_id AND attempt = p_attempt
       AND state = 'running';
    finished := FOUND;
    IF finished THEN
        INSERT INTO flow_run_event
               (tenant_id, run_id, seq, attempt, type, node_id, error, status, created_at)
        VALUES (p_tenant, p_run_id, p_seq, p_attempt, 'run_finished', '', p_error,
                jsonb_build_object('state', p_state), p_ended_at);
        PERFORM pg_notify(p_channel, p_payload);
    END IF;
    PERFORM set_config('kaireon.tenant_id', coalesce(previous, ''), true);
    RETURN finished;
END
$fn$;
REVOKE ALL ON FUNCTION kaireon_flow_finish_run(text, text, integer, text, text, timestamptz, bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_flow_finish_run(text, text, integer, text, text, timestamptz, bigint, text, text)
    TO kaireon_app;
