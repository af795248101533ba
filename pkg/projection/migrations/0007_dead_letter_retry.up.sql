-- A retry request on a dead letter: RetryDeadLetters sets it, and the
-- processor that owns the event's aggregate under the current topology
-- applies the event and deletes the row in one transaction (or records the
-- new error and clears the request). The partial index keeps the
-- processors' look-up for requests cheap however many dead letters wait.
ALTER TABLE projection_dead_letters ADD COLUMN IF NOT EXISTS retry_requested_at timestamptz;
ALTER TABLE projection_dead_letters ADD COLUMN IF NOT EXISTS retries integer NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS projection_dead_letters_retry_requested
    ON projection_dead_letters (projection_name) WHERE retry_requested_at IS NOT NULL;
