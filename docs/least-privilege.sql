-- Least privilege for projectionist: the database roles of the operator and
-- of the workers (docs/operations.md, "Database roles").
--
-- Run it as a superuser or the database's owner, in the events database:
-- once before the operator first connects, and again after the schema is
-- migrated (by the operator, or `projectionist migrate`) and after every
-- upgrade: it grants on the tables that exist, and is safe to run again.
--
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -f docs/least-privilege.sql
--
-- Then create a login in each role, for the Secrets:
--
--   CREATE ROLE projectionist_op LOGIN PASSWORD '...' IN ROLE projectionist_operator;
--   CREATE ROLE user_count LOGIN PASSWORD '...' IN ROLE projectionist_worker;
--   CREATE SCHEMA user_count AUTHORIZATION user_count;  -- its read models
--   CREATE ROLE keda LOGIN PASSWORD '...' IN ROLE projectionist_metrics;  -- lag only
--
-- A worker creates its read models in the schema named after its login,
-- first on its search_path ("$user", public), and nowhere else.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'projectionist_operator') THEN
        CREATE ROLE projectionist_operator NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'projectionist_worker') THEN
        CREATE ROLE projectionist_worker NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'projectionist_metrics') THEN
        CREATE ROLE projectionist_metrics NOLOGIN;
    END IF;
END
$$;

-- The operator migrates the schema (it creates, and so owns, the tables)
-- and switches topologies.
GRANT USAGE, CREATE ON SCHEMA public TO projectionist_operator;
GRANT USAGE ON SCHEMA public TO projectionist_worker, projectionist_metrics;

DO $$
DECLARE
    t text;
BEGIN
    -- Tables migrated by another role: the operator may still alter them.
    -- `projectionist import` runs with the operator's role (it inserts
    -- into events and writes its checkpoint, projection_imports); a source
    -- table in this database needs SELECT for it too, e.g.
    --   GRANT USAGE ON SCHEMA pup TO projectionist_operator;
    --   GRANT SELECT ON pup.events TO projectionist_operator;
    -- Workers get nothing on projection_imports.
    FOREACH t IN ARRAY ARRAY['events', 'projection_checkpoints', 'projection_topology', 'projection_frontier',
                             'projection_dead_letters', 'projection_resets', 'projectionist_schema_migrations',
                             'projection_imports'] LOOP
        IF to_regclass('public.' || t) IS NOT NULL THEN
            EXECUTE format('GRANT ALL ON public.%I TO projectionist_operator', t);
        END IF;
    END LOOP;
    IF to_regclass('public.events') IS NOT NULL THEN
        EXECUTE 'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO projectionist_operator';
    END IF;

    -- A worker reads the events and the topology, and writes its
    -- checkpoints and dead letters; it follows the topology the operator
    -- sets and never changes it. The column UPDATE on the topology is what
    -- PostgreSQL asks of the FOR SHARE lock every batch holds on it.
    IF to_regclass('public.events') IS NOT NULL THEN
        GRANT SELECT ON public.events, public.projectionist_schema_migrations TO projectionist_worker;
        GRANT SELECT, INSERT, UPDATE ON public.projection_checkpoints TO projectionist_worker;
    END IF;
    IF to_regclass('public.projection_topology') IS NOT NULL THEN
        GRANT SELECT, UPDATE (updated_at) ON public.projection_topology TO projectionist_worker;
        GRANT SELECT ON public.projection_frontier TO projectionist_worker;
    END IF;
    IF to_regclass('public.projection_dead_letters') IS NOT NULL THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.projection_dead_letters TO projectionist_worker;
    END IF;

    -- A rebuild (spec.rebuildToken): the operator requests a reset, and a
    -- worker carries it out at start, through the projection's Reset hook
    -- and projection_complete_reset, which deletes the checkpoints with the
    -- tables' owner's rights and only for a pending request. The column
    -- UPDATE is for the FOR UPDATE lock on the request and for recording a
    -- failed hook's error; a worker cannot request a reset.
    -- An autoscaler (KEDA's postgresql scaler) or a dashboard reads each
    -- projection's lag from the view, which runs with its owner's rights:
    -- the metrics role reads no event.
    IF to_regclass('public.projection_lag') IS NOT NULL THEN
        GRANT SELECT ON public.projection_lag TO projectionist_operator, projectionist_worker, projectionist_metrics;
    END IF;

    IF to_regclass('public.projection_resets') IS NOT NULL THEN
        GRANT SELECT, UPDATE (last_error) ON public.projection_resets TO projectionist_worker;
        GRANT EXECUTE ON FUNCTION public.projection_complete_reset(text, text, text, text)
            TO projectionist_operator, projectionist_worker;
    END IF;
END
$$;
