-- CreateDsarRequest with its lifecycle row, in one statement (issue #22).
--
-- A CreateDsarRequest is also an in-progress request of the lifecycle
-- (requests/intake.py). That row needs the tenant's policy for its due date,
-- so the service's create stayed a pooled transaction (BEGIN, the tenant, the
-- insert, a read back, the policy, the lifecycle row, the audit row, COMMIT and
-- the pool's reset: nine round trips) while a create without it was one
-- (0237). This function is kaireon_dsar_create and, only when that inserted the
-- request, its lifecycle row: origin 'direct', kind 'access', due by the
-- tenant's policy override of the regulation or the default the caller passes
-- (requests/deadlines.py DEFAULT_POLICIES). The caller's one statement appends
-- the audit row beside it (dsar/repository.py, insert_request_alone).
--
-- SECURITY INVOKER: kaireon_dsar_create sets the tenant first, and the policy
-- read and the insert then run, in order, under its row-level security.

-- requests/deadlines.py due_date for a new request: months from the receipt
-- date, clamped to that month's last day (PostgreSQL's date + interval does
-- the same), then days. tests/requests/test_due_date_sql.py holds them equal.
CREATE FUNCTION kaireon_due_date(p_received date, p_months integer, p_days integer)
    RETURNS date
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT (p_received + make_interval(months => p_months))::date + p_days
$$;

CREATE FUNCTION kaireon_dsar_create_direct(p_tenant text, p_id uuid, p_request_type text,
                                           p_subject_id text, p_encrypt boolean,
                                           p_idempotency_key text, p_created_by text,
                                           p_trace_parent text, p_trace_state text,
                                           p_regulation text, p_state text,
                                           p_received_at timestamptz,
                                           p_default_months integer, p_default_days integer)
    RETURNS SETOF dsar_request
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp
AS $$
DECLARE
    v_request dsar_request;
    v_months integer;
    v_days integer;
BEGIN
    SELECT * INTO v_request
      FROM kaireon_dsar_create(p_tenant, p_id, p_request_type, p_subject_id, p_encrypt,
                               p_idempotency_key, p_created_by, p_trace_parent, p_trace_state);
    IF v_request.id = p_id THEN
        SELECT p.period_months, p.period_days INTO v_months, v_days
          FROM subject_request_policy p
         WHERE p.tenant_id = p_tenant AND p.regulation = p_regulation;
        IF NOT FOUND THEN
            v_months := p_default_months;
            v_days := p_default_days;
        END IF;
        INSERT INTO subject_request (tenant_id, kind, subject_id, regulation, state, origin,
                                     received_at, due_date, created_by, dsar_request_id)
        VALUES (p_tenant, 'access', p_subject_id, p_regulation, p_state, 'direct',
                p_received_at,
                kaireon_due_date((p_received_at AT TIME ZONE 'UTC')::date, v_months, v_days),
                p_created_by, p_id);
    END IF;
    RETURN NEXT v_request;
END
$$;

REVOKE ALL ON FUNCTION kaireon_due_date(date, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_due_date(date, integer, integer) TO kaireon_app;
REVOKE ALL ON FUNCTION kaireon_dsar_create_direct(text, uuid, text, text, boolean, text, text,
                                                  text, text, text, text, timestamptz,
                                                  integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_dsar_create_direct(text, uuid, text, text, boolean, text, text,
                                                     text, text, text, text, timestamptz,
                                                     integer, integer) TO kaireon_app;
