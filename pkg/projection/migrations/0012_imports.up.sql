-- projection_imports: the checkpoint of `projectionist import`, which
-- copies an existing event log (the guide's events table) into events. One
-- row per source, written in the same transaction as each batch of copied
-- events, so that an import stopped at any point (a crash, Ctrl-C, a bad
-- event) resumes after the last batch it committed and copies nothing
-- twice.
--
-- source names the source table and where it lives, without a password:
-- "host:port/database/schema.table", or the import's --name.
-- last_position is the source's global_position of the last event copied
-- or skipped; events_skipped counts the events already present in events
-- (the same event_id), which were left as they were. completed_at is set
-- when a run reaches the end of the source, and cleared when a later run
-- starts.
CREATE TABLE IF NOT EXISTS projection_imports (
    source          text        PRIMARY KEY,
    last_position   bigint      NOT NULL DEFAULT 0,
    events_imported bigint      NOT NULL DEFAULT 0,
    events_skipped  bigint      NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz
);
