-- The provenance functions plan as if their tables were large, whatever size
-- they had when a session first ran them (issue #22, costs that grow with
-- history).
--
-- PL/pgSQL keeps a session's plan of each statement until the statistics or
-- the schema of a table it reads change. A plan made while audit_log held a
-- page or two (a new deployment, a perf run's first calls) scanned it whole,
-- cheaply then; without an ANALYZE since (autovacuum off, as on the CI
-- machine's PostgreSQL 15, or not yet run) the same plan went on scanning it
-- at 60,000 rows: 125 ms per bundle, 8 bundles/s streamed instead of 800.
-- Every read of these functions is a lookup of one tenant's decision, its
-- cited rows and catalogue entries, each with an index of its own, so a
-- sequential scan is never the plan wanted: the planner is told so.

ALTER FUNCTION kaireon_provenance_bundle(text, text) SET enable_seqscan = off;
ALTER FUNCTION kaireon_provenance_emission(text, text, text) SET enable_seqscan = off;
ALTER FUNCTION kaireon_provenance_keep(text, text, text, bytea, text, text, integer, integer,
                                       bigint) SET enable_seqscan = off;
