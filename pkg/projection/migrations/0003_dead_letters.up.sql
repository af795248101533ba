-- Events a projection failed to handle under ErrorPolicyDeadLetter, written
-- in the batch's transaction: each poison event is recorded exactly once,
-- and the checkpoint moves past it.
CREATE TABLE IF NOT EXISTS projection_dead_letters (
    projection_name      text        NOT NULL,
    event_id             uuid        NOT NULL,
    partition_key        integer     NOT NULL,
    global_position      bigint      NOT NULL,
    transaction_id       xid8        NOT NULL,
    aggregate_type       text        NOT NULL,
    aggregate_id         text        NOT NULL,
    event_type           text        NOT NULL,
    error                text        NOT NULL,
    failed_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection_name, event_id)
);
