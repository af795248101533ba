-- Limits on the fields of the events' unique index, so that a writer
-- appending with a plain INSERT gets a named CHECK violation instead of
-- "index row requires 10032 bytes, maximum size is 8191": a B-tree entry
-- must fit in about a third of a page (2704 bytes), and these bounds keep
-- (bounded_context, aggregate_type, aggregate_id, aggregate_version)
-- below it. Store.Append checks the same limits before it touches the
-- database (MaxAggregateIDBytes and its siblings in pkg/projection).
-- NOT VALID: rows already stored are not scanned; new ones are checked.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'events_aggregate_id_size' AND conrelid = 'events'::regclass) THEN
        ALTER TABLE events
            ADD CONSTRAINT events_aggregate_id_size CHECK (octet_length(aggregate_id) <= 2048) NOT VALID,
            ADD CONSTRAINT events_aggregate_type_size CHECK (octet_length(aggregate_type) <= 255) NOT VALID,
            ADD CONSTRAINT events_bounded_context_size CHECK (octet_length(bounded_context) <= 255) NOT VALID,
            ADD CONSTRAINT events_event_type_size CHECK (octet_length(event_type) <= 255) NOT VALID;
    END IF;
END
$$;
