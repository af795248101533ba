-- Per-event causation, correlation and trace ids, as the guide's event
-- store has them: which command or event caused this one, which
-- conversation it belongs to, and the distributed trace (e.g. a W3C trace
-- id) it was written under. NULL when the writer gave none. Nullable
-- columns without a default: adding them rewrites no row, so this runs
-- in milliseconds on a log of any size, and writers that do not know the
-- columns (plain INSERTs naming their columns) keep working.
ALTER TABLE events
    ADD COLUMN IF NOT EXISTS causation_id   text,
    ADD COLUMN IF NOT EXISTS correlation_id text,
    ADD COLUMN IF NOT EXISTS trace_id       text;
