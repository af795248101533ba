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
