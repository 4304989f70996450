-- Row-level security for dynamic ds_* tables from the moment they are created.
--
-- Migration 0100 protects the tables that exist when it runs; ds_* tables come
-- later. The server's start-up pass and register_dynamic_table
-- (platform/db/dynamic_tables.py) secure them from the owner connection; this
-- event trigger closes the gap in between (a table created while the server
-- runs): at CREATE TABLE, a ds_* table in public gets row-level security and,
-- when it has a tenant_id column, the tenant_isolation policy of 0100. Without
-- tenant_id it gets no policy, so the application role sees none of its rows.
--
-- The trigger function runs as the role creating the table, which owns it.
-- Only a superuser may create event triggers: where the migrating role is not
-- one (a managed PostgreSQL), the trigger is left out with a notice and the
-- start-up pass and registration do the work.

CREATE FUNCTION kaireon_secure_new_dynamic_table()
    RETURNS event_trigger
    LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
DECLARE
    created record;
BEGIN
    FOR created IN
        SELECT c.oid::regclass AS tbl,
               EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                          AND a.attnum > 0 AND NOT a.attisdropped) AS has_tenant
          FROM pg_event_trigger_ddl_commands() d
          JOIN pg_class c ON c.oid = d.objid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE d.classid = 'pg_class'::regclass AND d.object_type = 'table'
           AND n.nspname = 'public' AND c.relkind IN ('r', 'p')
           AND c.relname LIKE 'ds\_%'
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', created.tbl);
        IF created.has_tenant THEN
            EXECUTE format(
                'CREATE POLICY tenant_isolation ON %s TO kaireon_app '
                'USING (tenant_id = current_setting(''kaireon.tenant_id'', true)) '
                'WITH CHECK (tenant_id = current_setting(''kaireon.tenant_id'', true))',
                created.tbl
            );
        END IF;
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION kaireon_secure_new_dynamic_table() FROM PUBLIC;

DO $$
BEGIN
    CREATE EVENT TRIGGER kaireon_dynamic_table_rls ON ddl_command_end
        WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO')
        EXECUTE FUNCTION kaireon_secure_new_dynamic_table();
EXCEPTION
    WHEN insufficient_privilege THEN
        RAISE NOTICE 'kaireon: not a superuser, no event trigger for ds_* tables; '
                     'the server secures them at start-up and on registration';
END
$$;
