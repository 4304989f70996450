-- The W3C trace context of the call that queued a DSAR request (CreateDsarRequest,
-- or the flow node that called it), so the export job's span joins that trace
-- (dsar/tracing_context.py). traceparent and tracestate only: no personal value.
-- Null when tracing was off. The row keeps its tenant's row-level security
-- (0100); the worker reads the columns in the claim's UPDATE ... RETURNING,
-- after the claimed row's tenant is set, so no SECURITY DEFINER function changes.

ALTER TABLE dsar_request
    ADD COLUMN trace_parent text
        CHECK (trace_parent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'),
    -- W3C: vendors propagate at least 512 characters; longer ones are not stored.
    ADD COLUMN trace_state text
        CHECK (trace_state IS NULL
               OR (char_length(trace_state) BETWEEN 1 AND 512 AND trace_parent IS NOT NULL));
