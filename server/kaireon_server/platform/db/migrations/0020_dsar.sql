-- DsarService: data-subject requests, which are also the job queue, their
-- state history (what watchers replay) and the stored export documents.

CREATE TABLE dsar_request (
    tenant_id          text        NOT NULL,
    id                 uuid        NOT NULL,
    request_type       text        NOT NULL CHECK (request_type IN ('export')),
    -- The data subject; kept after an erasure as proof the request was answered.
    subject_id         text        NOT NULL CHECK (char_length(subject_id) BETWEEN 1 AND 256),
    status             text        NOT NULL DEFAULT 'pending'
                                   CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    encrypt            boolean     NOT NULL DEFAULT false,
    progress           integer     NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    -- A reason code and exception type only: never personal data.
    error              text,
    idempotency_key    text        CHECK (char_length(idempotency_key) BETWEEN 1 AND 128),
    created_by         text        NOT NULL,
    -- Queue state: a worker owns a processing row while its lease runs.
    attempts           integer     NOT NULL DEFAULT 0,
    run_after          timestamptz NOT NULL DEFAULT now(),
    lease_owner        text,
    lease_expires_at   timestamptz,
    heartbeat_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    completed_at       timestamptz,
    -- Bumped by trigger on every status/progress/error change; see dsar_request_event.
    version            bigint      NOT NULL DEFAULT 1,
    -- The finished export: which attempt wrote the chunks, and what they hold.
    export_attempt     integer,
    export_chunks      integer,
    export_size        bigint,
    export_rows        bigint,
    export_digest      text,
    export_signature   text,
    export_signing_key_id text,
    export_key_version text,
    PRIMARY KEY (tenant_id, id)
);
-- Idempotent creates: one request per key and tenant.
CREATE UNIQUE INDEX dsar_request_idempotency_idx
    ON dsar_request (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX dsar_request_list_idx ON dsar_request (tenant_id, created_at DESC, id DESC);
CREATE INDEX dsar_request_status_idx ON dsar_request (tenant_id, status, created_at DESC, id DESC);
CREATE INDEX dsar_request_subject_idx ON dsar_request (tenant_id, subject_id);
-- The queue: the claim scans only open rows, across tenants.
CREATE INDEX dsar_request_pending_idx ON dsar_request (run_after, created_at) WHERE status = 'pending';
CREATE INDEX dsar_request_lease_idx ON dsar_request (lease_expires_at) WHERE status = 'processing';

-- Every state a request went through, in version order. Watchers replay it, so
-- no transition is lost between a notification and the read that follows it,
-- and a reconnecting watcher resumes after the last version it saw. Holds no
-- personal data (no subject id).
CREATE TABLE dsar_request_event (
    tenant_id  text        NOT NULL,
    request_id uuid        NOT NULL,
    version    bigint      NOT NULL,
    status     text        NOT NULL,
    progress   integer     NOT NULL,
    error      text,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, request_id, version),
    FOREIGN KEY (tenant_id, request_id) REFERENCES dsar_request (tenant_id, id) ON DELETE CASCADE
);

-- The export documents, in order. Only the attempt that completed the request
-- ever commits chunks (they are written in the same transaction that marks it
-- completed), so a dead worker leaves nothing half-written behind.
CREATE TABLE dsar_export_chunk (
    tenant_id  text    NOT NULL,
    request_id uuid    NOT NULL,
    attempt    integer NOT NULL,
    seq        integer NOT NULL,
    -- Erasure deletes a subject's stored exports by this column.
    subject_id text    NOT NULL,
    data       bytea   NOT NULL,
    PRIMARY KEY (tenant_id, request_id, attempt, seq),
    FOREIGN KEY (tenant_id, request_id) REFERENCES dsar_request (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX dsar_export_chunk_subject_idx ON dsar_export_chunk (tenant_id, subject_id);

-- Version bump on every visible change, whichever code path makes it.
CREATE FUNCTION dsar_request_bump_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status
       OR NEW.progress IS DISTINCT FROM OLD.progress
       OR NEW.error IS DISTINCT FROM OLD.error THEN
        NEW.version := OLD.version + 1;
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER dsar_request_bump_version BEFORE UPDATE ON dsar_request
    FOR EACH ROW EXECUTE FUNCTION dsar_request_bump_version();

-- Record the new state and tell every replica (delivered at commit). The
-- payload names tenant, request and version only: listeners re-read the rest.
CREATE FUNCTION dsar_request_publish() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.version <> OLD.version THEN
        INSERT INTO dsar_request_event (tenant_id, request_id, version, status, progress, error, created_at)
        VALUES (NEW.tenant_id, NEW.id, NEW.version, NEW.status, NEW.progress, NEW.error, NEW.updated_at);
        PERFORM pg_notify('kaireon_dsar',
            json_build_object('t', NEW.tenant_id, 'i', NEW.id, 'v', NEW.version)::text);
        IF NEW.status = 'pending' THEN
            PERFORM pg_notify('kaireon_dsar_jobs', '');
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER dsar_request_publish AFTER INSERT OR UPDATE ON dsar_request
    FOR EACH ROW EXECUTE FUNCTION dsar_request_publish();
