-- A row fenced by its state is found by its key alone (issue #22: costs that
-- grow with history; StartRun and small DSAR exports).
--
-- Statements that update one row "if it is still running" (a run's end, a
-- DSAR attempt's progress and completion, a webhook's delivery, a request
-- completed by its export) named the row by its key and filtered on the state:
-- `... WHERE tenant_id = $1 AND run_id = $2 AND state = 'running'`. The state
-- matches indexes of its own (flow_run_running_idx, flow_run_state_list_idx,
-- the DSAR lease and status indexes, ...), and a generic plan went in through
-- one of them whenever the statistics favoured it. Those indexes keep an entry
-- for every row that was ever in the state until a vacuum removes it, since
-- each row's update moves it out, and a scan skips an entry cheaply only once
-- a scan before it found the row dead to every snapshot. So a run's end walked
-- the runs ended since (all of them while an older snapshot is held: a long
-- export, a backup): 4.8 ms per end at 18,000 runs under a flow load of 150
-- runs/s; with a snapshot held for 25 s, 0.94 ms on average and 31.5 ms at
-- worst, against 0.08 and 7.4 ms by the key (pg_stat_statements; PostgreSQL 15
-- here runs with autovacuum off, and on a busy server a vacuum lags).
--
-- `IS NOT DISTINCT FROM` is `=` on a NOT NULL column, but no index serves it,
-- so the key is the only way in (tests/platform/test_fenced_by_key.py; the
-- statements sent from Python are fenced the same way).

-- The end of a flow run's attempt (0220).
CREATE OR REPLACE FUNCTION kaireon_flow_finish_run(
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
       AND state IS NOT DISTINCT FROM 'running';
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

-- A request made by an approved access request is completed with its export.
CREATE OR REPLACE FUNCTION kaireon_subject_request_export_done()
    RETURNS trigger
    LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
BEGIN
    UPDATE subject_request
       SET state = 'completed', updated_at = now()
     WHERE tenant_id = NEW.tenant_id AND dsar_request_id = NEW.id
       AND state IS NOT DISTINCT FROM 'in_progress';
    RETURN NULL;
END
$$;

-- A request is completed once its last processor notification is settled.
CREATE OR REPLACE FUNCTION kaireon_processor_outbox_settled()
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
         WHERE tenant_id = NEW.tenant_id AND id = NEW.request_id
           AND state IS NOT DISTINCT FROM 'in_progress';
    END IF;
    RETURN NULL;
END
$$;
