-- Legal holds (ErasureService): while a row exists for a customer, erasure of
-- that customer is refused (GDPR Art. 17(3)(e)). A hold is lifted by deleting
-- its row; the audit chain keeps the history (legal_hold_set / _released).
-- One hold per customer: the primary key also serves the erasure-time lookup
-- and the customer-ordered listing.
CREATE TABLE legal_hold (
    tenant_id   text        NOT NULL,
    customer_id text        NOT NULL CHECK (char_length(customer_id) BETWEEN 1 AND 256),
    -- A case reference, not personal data; shown in the error that refuses an erasure.
    reason      text        NOT NULL CHECK (char_length(reason) BETWEEN 1 AND 500),
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_id)
);
