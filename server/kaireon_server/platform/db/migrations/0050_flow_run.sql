-- FlowRunnerService: runs, per-node status, the event log WatchRun replays,
-- and the checkpoints a retry reuses. Every table leads with tenant_id and
-- every query filters by it. IF NOT EXISTS keeps the file idempotent.

-- One row per run (run_id is unique per tenant, caller-chosen or generated).
CREATE TABLE IF NOT EXISTS flow_run (
    tenant_id         text        NOT NULL,
    run_id            text        NOT NULL,
    name              text        NOT NULL DEFAULT '',
    -- The definition in its JSON form (protojson names).
    definition        jsonb       NOT NULL,
    definition_digest text        NOT NULL,
    state             text        NOT NULL
                      CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    -- 1 + retries; also the fence that stops a stale executor's writes.
    attempt           integer     NOT NULL DEFAULT 1,
    error             text        NOT NULL DEFAULT '',
    cancel_requested  boolean     NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    ended_at          timestamptz,
    PRIMARY KEY (tenant_id, run_id)
);
CREATE INDEX IF NOT EXISTS flow_run_list_idx ON flow_run (tenant_id, created_at DESC, run_id DESC);
-- The orphan sweep looks for running runs across tenants.
CREATE INDEX IF NOT EXISTS flow_run_running_idx ON flow_run (state) WHERE state = 'running';

-- Status of each node in the latest attempt of a run.
CREATE TABLE IF NOT EXISTS flow_run_node (
    tenant_id     text        NOT NULL,
    run_id        text        NOT NULL,
    node_id       text        NOT NULL,
    position      integer     NOT NULL,
    node_type     text        NOT NULL,
    state         text        NOT NULL
                  CHECK (state IN ('pending', 'running', 'completed', 'skipped', 'failed', 'cancelled')),
    attempts      integer     NOT NULL DEFAULT 0,
    error         text        NOT NULL DEFAULT '',
    cache_key     text        NOT NULL DEFAULT '',
    output_digest text        NOT NULL DEFAULT '',
    started_at    timestamptz,
    ended_at      timestamptz,
    PRIMARY KEY (tenant_id, run_id, node_id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES flow_run (tenant_id, run_id) ON DELETE CASCADE
);

-- Append-only event log of a run (all attempts); seq orders it per run.
CREATE TABLE IF NOT EXISTS flow_run_event (
    tenant_id  text        NOT NULL,
    run_id     text        NOT NULL,
    seq        bigint      NOT NULL,
    attempt    integer     NOT NULL,
    type       text        NOT NULL,
    node_id    text        NOT NULL DEFAULT '',
    error      text        NOT NULL DEFAULT '',
    -- The node's status after the event (node events) or the run's state.
    status     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, run_id, seq),
    FOREIGN KEY (tenant_id, run_id) REFERENCES flow_run (tenant_id, run_id) ON DELETE CASCADE
);

-- The checkpoint of each successful node: its output, keyed by cache key.
-- No foreign key to flow_run: the runner can be embedded without the service.
CREATE TABLE IF NOT EXISTS flow_run_checkpoint (
    tenant_id     text        NOT NULL,
    run_id        text        NOT NULL,
    node_id       text        NOT NULL,
    cache_key     text        NOT NULL,
    output_digest text        NOT NULL,
    -- NULL holds a JSON null output (asyncpg sends None as SQL NULL).
    output        jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, run_id, node_id)
);
