-- Core data model. Every table leads with tenant_id and every query filters
-- by it (and, with Citus, every table can be distributed by it). Customer-data
-- tables are indexed for (tenant_id, customer_id) lookups.

-- Audit chain ---------------------------------------------------------------

CREATE TABLE audit_log (
    tenant_id        text        NOT NULL,
    seq              bigint      NOT NULL,
    id               uuid        NOT NULL,
    action           text        NOT NULL,
    entity_type      text        NOT NULL,
    -- Plain entity id; NULL once redacted when it was personal data.
    entity_id        text,
    -- sha256(salt || canonical(entity_id)) for personal entity ids, else NULL.
    entity_id_digest text,
    entity_id_salt   text,
    actor            text        NOT NULL,
    -- Non-personal details, hashed as they are.
    changes          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Personal details {key: value} with {key: salt}; hashed through digests.
    personal         jsonb,
    personal_salts   jsonb,
    personal_digests jsonb       NOT NULL DEFAULT '{}'::jsonb,
    prev_hash        text        NOT NULL,
    integrity_hash   text        NOT NULL,
    created_at       timestamptz NOT NULL,
    -- The data subject the row concerns (lookup key for redaction; not hashed).
    subject_id       text,
    redacted_at      timestamptz,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, id)
);
CREATE INDEX audit_log_entity_idx ON audit_log (tenant_id, entity_type, entity_id);
CREATE INDEX audit_log_subject_idx ON audit_log (tenant_id, subject_id) WHERE subject_id IS NOT NULL;
CREATE INDEX audit_log_action_idx ON audit_log (tenant_id, action, seq);

-- One row per tenant: locking it serialises appends so the chain never forks.
CREATE TABLE audit_chain_head (
    tenant_id  text   PRIMARY KEY,
    seq        bigint NOT NULL,
    head_hash  text   NOT NULL
);

-- Customer-data tables (the erasure / DSAR categories) ----------------------

CREATE TABLE interaction_history (
    tenant_id   text        NOT NULL,
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    customer_id text        NOT NULL,
    offer_id    text        NOT NULL,
    channel     text        NOT NULL,
    event_type  text        NOT NULL CHECK (event_type IN ('recommendation', 'impression', 'click', 'conversion')),
    decision_id text,
    occurred_at timestamptz NOT NULL,
    attributes  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX interaction_history_customer_idx ON interaction_history (tenant_id, customer_id);

CREATE TABLE interaction_summary (
    tenant_id           text        NOT NULL,
    customer_id         text        NOT NULL,
    offer_id            text        NOT NULL,
    channel             text        NOT NULL,
    impressions         integer     NOT NULL DEFAULT 0,
    clicks              integer     NOT NULL DEFAULT 0,
    conversions         integer     NOT NULL DEFAULT 0,
    last_interaction_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, offer_id, channel)
);

CREATE TABLE suppression (
    tenant_id   text        NOT NULL,
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    customer_id text        NOT NULL,
    offer_id    text,
    policy_id   text        NOT NULL,
    reason      text        NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX suppression_customer_idx ON suppression (tenant_id, customer_id);

CREATE TABLE decision_trace (
    tenant_id               text        NOT NULL,
    id                      text        NOT NULL,
    customer_id             text        NOT NULL,
    decided_at              timestamptz NOT NULL,
    channel                 text        NOT NULL,
    selected_offer_id       text,
    -- Offers considered, with scores: [{offerId, score, selected}].
    candidates              jsonb       NOT NULL DEFAULT '[]'::jsonb,
    -- Models used: [{modelId, version}].
    models                  jsonb       NOT NULL DEFAULT '[]'::jsonb,
    -- What fired at decision time.
    qualification_results   jsonb       NOT NULL DEFAULT '[]'::jsonb,
    contact_policy_results  jsonb       NOT NULL DEFAULT '[]'::jsonb,
    -- Request context; holds personal data (redacted in provenance bundles).
    attributes              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX decision_trace_customer_idx ON decision_trace (tenant_id, customer_id);

CREATE TABLE attribution_result (
    tenant_id     text        NOT NULL,
    id            bigint      GENERATED ALWAYS AS IDENTITY,
    customer_id   text        NOT NULL,
    decision_id   text,
    offer_id      text        NOT NULL,
    outcome       text        NOT NULL,
    value         numeric(14, 2) NOT NULL DEFAULT 0,
    attributed_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX attribution_result_customer_idx ON attribution_result (tenant_id, customer_id);

CREATE TABLE variant_assignment (
    tenant_id     text        NOT NULL,
    customer_id   text        NOT NULL,
    experiment_id text        NOT NULL,
    variant       text        NOT NULL,
    assigned_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, experiment_id)
);

CREATE TABLE identity_link (
    tenant_id        text        NOT NULL,
    id               bigint      GENERATED ALWAYS AS IDENTITY,
    cluster_id       text        NOT NULL,
    customer_id      text        NOT NULL,
    identifier_type  text        NOT NULL,
    identifier_value text        NOT NULL,
    linked_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX identity_link_customer_idx ON identity_link (tenant_id, customer_id);

CREATE TABLE journey_enrollment (
    tenant_id   text        NOT NULL,
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    customer_id text        NOT NULL,
    journey_id  text        NOT NULL,
    state       text        NOT NULL,
    enrolled_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX journey_enrollment_customer_idx ON journey_enrollment (tenant_id, customer_id);

CREATE TABLE delivery (
    tenant_id   text        NOT NULL,
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    customer_id text        NOT NULL,
    offer_id    text        NOT NULL,
    channel     text        NOT NULL,
    -- Where it went (email address, phone number): personal data.
    destination text        NOT NULL,
    status      text        NOT NULL,
    sent_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX delivery_customer_idx ON delivery (tenant_id, customer_id);

CREATE TABLE consent_record (
    tenant_id   text        NOT NULL,
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    customer_id text        NOT NULL,
    purpose     text        NOT NULL,
    granted     boolean     NOT NULL,
    source      text        NOT NULL,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX consent_record_customer_idx ON consent_record (tenant_id, customer_id);

-- Dynamic per-tenant tables (ds_*) are registered here. Their names are
-- validated identifiers and always quoted when used.
CREATE TABLE schema_registry (
    tenant_id   text        NOT NULL,
    schema_id   text        NOT NULL,
    table_name  text        NOT NULL CHECK (table_name ~ '^ds_[a-z0-9_]{1,59}$'),
    entity_type text        NOT NULL,
    active      boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, schema_id),
    UNIQUE (table_name)
);

-- Decisioning artifacts (versioned with validity intervals) ------------------

CREATE TABLE offer (
    tenant_id   text        NOT NULL,
    offer_id    text        NOT NULL,
    version     integer     NOT NULL,
    category_id text        NOT NULL,
    name        text        NOT NULL,
    attributes  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    valid_from  timestamptz NOT NULL,
    valid_to    timestamptz,
    PRIMARY KEY (tenant_id, offer_id, version)
);

-- Qualification rules at three levels: global (scope_id NULL), category, offer.
CREATE TABLE rule (
    tenant_id  text        NOT NULL,
    rule_id    text        NOT NULL,
    version    integer     NOT NULL,
    level      text        NOT NULL CHECK (level IN ('global', 'category', 'offer')),
    scope_id   text,
    name       text        NOT NULL,
    expression jsonb       NOT NULL,
    priority   integer     NOT NULL DEFAULT 0,
    valid_from timestamptz NOT NULL,
    valid_to   timestamptz,
    PRIMARY KEY (tenant_id, rule_id, version),
    CHECK ((level = 'global') = (scope_id IS NULL))
);
CREATE INDEX rule_scope_idx ON rule (tenant_id, level, scope_id);

CREATE TABLE contact_policy (
    tenant_id  text        NOT NULL,
    policy_id  text        NOT NULL,
    version    integer     NOT NULL,
    level      text        NOT NULL CHECK (level IN ('global', 'category', 'offer')),
    scope_id   text,
    name       text        NOT NULL,
    policy     jsonb       NOT NULL,
    priority   integer     NOT NULL DEFAULT 0,
    valid_from timestamptz NOT NULL,
    valid_to   timestamptz,
    PRIMARY KEY (tenant_id, policy_id, version),
    CHECK ((level = 'global') = (scope_id IS NULL))
);
CREATE INDEX contact_policy_scope_idx ON contact_policy (tenant_id, level, scope_id);

CREATE TABLE ml_model (
    tenant_id  text        NOT NULL,
    model_id   text        NOT NULL,
    version    integer     NOT NULL,
    model_type text        NOT NULL,
    status     text        NOT NULL DEFAULT 'active',
    state      jsonb       NOT NULL,
    valid_from timestamptz NOT NULL,
    valid_to   timestamptz,
    PRIMARY KEY (tenant_id, model_id, version)
);

CREATE TABLE fairness_report (
    tenant_id  text        NOT NULL,
    id         text        NOT NULL,
    model_id   text        NOT NULL,
    report     jsonb       NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX fairness_report_time_idx ON fairness_report (tenant_id, created_at);
