-- Wakeups on commit, opt-in: while projectionist.wakeups is 'on' for the
-- writing session, every statement that appends events sends one
-- notification on the channel projectionist_events, which PostgreSQL
-- delivers to listening processors when the appending transaction commits
-- (and never if it rolls back). It is in the schema, not in Store.Append,
-- so that any writer (psql, another language, COPY, a CDC sink) wakes the
-- processors too. A processor that gets no notification still polls:
-- notifications only save latency and idle queries, never correctness.
--
-- Off by default, because of what it costs at commit: a transaction that
-- notifies holds a cluster-wide lock from just before its commit record
-- until after it is flushed, so concurrent notifying commits no longer
-- share WAL flushes (group commit). Measured with pgbench, 8 clients,
-- single-row INSERTs, fsync=on: about 450 transactions/s with
-- notifications against 2700 without. Unset (the default) the triggers
-- send nothing and take no lock; a DBA who wants the latency opts in for
-- the database, a role or a session:
--   ALTER DATABASE app SET projectionist.wakeups = on;  -- or ALTER ROLE / SET
-- and starts the processors with WAKEUPS=listen (docs/operations.md,
-- "Wakeups on commit").
--
-- Payloads, all short:
--   'e <xid>'         events appended by transaction <xid> (its xid8);
--   'e <xid> <hash>'  the same, when every row of the statement has one
--                     partition hash (an aggregate's append: wake only the
--                     partition that owns it);
--   't'               a topology, frontier or checkpoint set changed
--                     (a rescale, a rebuild, a reset): wake everyone;
--   'r'               a dead-letter retry was requested: wake everyone.
-- PostgreSQL folds identical notifications of one transaction into one.
--
-- Statement-level triggers, so a bulk INSERT costs one pg_notify, not one
-- per row; the transition table is read only for its min and max hash.

CREATE OR REPLACE FUNCTION projection_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    lo bigint;
    hi bigint;
BEGIN
    IF current_setting('projectionist.wakeups', true) IS DISTINCT FROM 'on' THEN
        RETURN NULL; -- not opted in: no notification, no commit lock
    END IF;
    SELECT min(partition_hash), max(partition_hash) INTO lo, hi FROM projection_new_events;
    IF lo IS NULL THEN
        RETURN NULL; -- the statement inserted no rows
    END IF;
    PERFORM pg_notify('projectionist_events', 'e ' || pg_current_xact_id()::text
        || CASE WHEN lo = hi THEN ' ' || lo::text ELSE '' END);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION projection_state_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('projectionist.wakeups', true) IS DISTINCT FROM 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('projectionist_events', TG_ARGV[0]);
    RETURN NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgname = 'events_notify' AND tgrelid = 'events'::regclass) THEN
        CREATE TRIGGER events_notify
            AFTER INSERT ON events
            REFERENCING NEW TABLE AS projection_new_events
            FOR EACH STATEMENT
            EXECUTE FUNCTION projection_events_notify();
    END IF;
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgname = 'projection_topology_notify' AND tgrelid = 'projection_topology'::regclass) THEN
        CREATE TRIGGER projection_topology_notify
            AFTER INSERT OR UPDATE OR DELETE ON projection_topology
            FOR EACH STATEMENT
            EXECUTE FUNCTION projection_state_notify('t');
    END IF;
    -- Checkpoints are updated by every batch: only their removal (a
    -- switch, a reset) wakes anyone.
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgname = 'projection_checkpoints_notify' AND tgrelid = 'projection_checkpoints'::regclass) THEN
        CREATE TRIGGER projection_checkpoints_notify
            AFTER DELETE ON projection_checkpoints
            FOR EACH STATEMENT
            EXECUTE FUNCTION projection_state_notify('t');
    END IF;
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgname = 'projection_dead_letters_notify' AND tgrelid = 'projection_dead_letters'::regclass) THEN
        CREATE TRIGGER projection_dead_letters_notify
            AFTER UPDATE OF retry_requested_at ON projection_dead_letters
            FOR EACH STATEMENT
            EXECUTE FUNCTION projection_state_notify('r');
    END IF;
END
$$;
