-- Reset requests: a declarative rebuild (the operator's spec.rebuildToken,
-- or RequestReset) asks for a projection's read model and checkpoints to be
-- reset, and the projection's own workers do it at start
-- (ApplyPendingReset, pkg/projection/reset.go), through the projection's
-- Reset hook, in the transaction that deletes the checkpoints.
--
-- One row per projection, apart from projection_topology so that a request
-- can wait for a projection that has no topology yet, and so that
-- ResetProjection (which deletes the topology row) leaves the record of
-- past rebuilds alone. A reset is pending while requested_token differs
-- from done_token; done with error set means it failed (no Reset hook) and
-- is not retried until another token is requested. last_error is the last
-- failure of a Reset hook that returned an error: the request stays
-- pending and the workers retry it.
CREATE TABLE IF NOT EXISTS projection_resets (
    projection_name text        PRIMARY KEY,
    requested_token text        NOT NULL CHECK (requested_token <> ''),
    requested_at    timestamptz NOT NULL DEFAULT now(),
    done_token      text,
    done_at         timestamptz,
    done_by         text,
    error           text,
    last_error      text
);

-- projection_complete_reset carries out the pending request of a projection
-- under token p_token, in the caller's transaction: after the caller has
-- locked the request's row and the topology FOR UPDATE and run the
-- projection's Reset hook (p_error null), it deletes the projection's
-- checkpoints, frontier and dead letters, bumps the topology's generation so
-- that a processor still running starts over, and marks the request done by
-- p_by; with p_error set it only marks the request refused. It returns
-- false, changing nothing, when the request is no longer pending under
-- p_token (another worker did it).
--
-- SECURITY DEFINER, with the rights of the role that migrated (the owner of
-- the tables): a worker's role (docs/least-privilege.sql) may carry out a
-- reset that was requested, and only that, without the right to delete any
-- checkpoint itself. Its search_path is pinned to the schema the tables are
-- in, with pg_temp last, so that a caller's temporary table cannot stand in
-- for one of them.
CREATE OR REPLACE FUNCTION projection_complete_reset(p_projection text, p_token text, p_by text, p_error text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
BEGIN
    PERFORM 1 FROM projection_resets
        WHERE projection_name = p_projection AND requested_token = p_token
          AND done_token IS DISTINCT FROM requested_token
        FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_error IS NULL THEN
        DELETE FROM projection_checkpoints WHERE projection_name = p_projection;
        DELETE FROM projection_frontier WHERE projection_name = p_projection;
        DELETE FROM projection_dead_letters WHERE projection_name = p_projection;
        UPDATE projection_topology SET generation = generation + 1, events_processed_before = 0, updated_at = now()
            WHERE projection_name = p_projection;
    END IF;
    UPDATE projection_resets
        SET done_token = requested_token, done_at = now(), done_by = p_by, error = p_error, last_error = NULL
        WHERE projection_name = p_projection;
    RETURN true;
END
$$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION projection_complete_reset(text, text, text, text) SET search_path = %I, pg_temp',
                   current_schema());
END
$$;

-- Functions are anyone's to call unless revoked; docs/least-privilege.sql
-- grants this one to the operator's and the workers' roles.
REVOKE EXECUTE ON FUNCTION projection_complete_reset(text, text, text, text) FROM PUBLIC;
