-- The partition hash, computable in SQL, so that any writer (psql, another
-- language, a CDC sink) can append with a plain INSERT that leaves out
-- partition_hash, bounded_context, event_version, metadata, created_at and
-- transaction_id, and gets the values Store.Append would have written.
--
-- projection_partition_hash(id) is bit-identical to Go's
-- int64(PartitionHash(id)): 32-bit FNV-1a over the id's UTF-8 bytes, as an
-- unsigned value in [0, 4294967295]. The product of a 32-bit hash and the
-- 25-bit FNV prime fits in a bigint, so the arithmetic never overflows.
-- PL/pgSQL, because it is about ten times faster than a recursive SQL
-- query: about 4 us for a 36-byte id and 0.2 ms for the longest (2048 bytes).
CREATE OR REPLACE FUNCTION projection_partition_hash(aggregate_id text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    b bytea := convert_to(aggregate_id, 'UTF8');
    h bigint := 2166136261;
BEGIN
    FOR i IN 0 .. length(b) - 1 LOOP
        h := ((h # get_byte(b, i)) * 16777619) & 4294967295;
    END LOOP;
    RETURN h;
END
$$;

-- Fills partition_hash when an INSERT leaves it out. Store.Append sets it,
-- so the trigger's WHEN skips the call for Go appends. The search_path is
-- the migration's, so the function is found whichever search_path the
-- writer has (it may name events with its schema).
CREATE OR REPLACE FUNCTION projection_events_partition_hash() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    NEW.partition_hash := projection_partition_hash(NEW.aggregate_id);
    RETURN NEW;
END
$$;

-- NOT NULL and the CHECK on partition_hash are evaluated after BEFORE
-- triggers, so they stay as they are and still hold for every row.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgname = 'events_partition_hash' AND tgrelid = 'events'::regclass) THEN
        CREATE TRIGGER events_partition_hash
            BEFORE INSERT ON events
            FOR EACH ROW
            WHEN (NEW.partition_hash IS NULL)
            EXECUTE FUNCTION projection_events_partition_hash();
    END IF;
END
$$;
