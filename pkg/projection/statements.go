// Statements: every SQL statement on projectionist's own tables
// (projection_topology, projection_checkpoints, projection_frontier,
// projection_dead_letters, projection_resets) and on the catalog about
// partition indexes, grouped by concern, so that a change to one of those
// tables finds every statement it touches here. The tables themselves are
// the migrations' (migrations/*.up.sql).
//
// Not here: the statements on events alone stay beside their code
// (store.go: the event store, and eventQuery, the processor's read;
// deadletters.go: retryEventSQL), as do the partition indexes' DDL
// (partition_index.go: CREATE and DROP INDEX CONCURRENTLY, built from the
// partition count), the catch-up target (processor.go: no table), the
// wakeup listener's setting (listener.go) and the migration runner's
// (migrate.go). The library does not read the projection_lag view of
// migrations 0011 and 0014: the view spells out lagBeyondSQL for SQL users.
// projection_imports is the importer's (internal/importer).

package projection

import "strings"

// A batch: the statements each batch of a processor runs, in order, on the
// topology and its partition's checkpoint (processor.go: lockState,
// checkpoint, setAside).
const (
	// lockStateSQL reads the topology and this partition's checkpoint,
	// holding the topology FOR SHARE (a switch waits for this batch, and
	// this batch for a switch in progress) and the checkpoint FOR UPDATE
	// (two processors with the same key take turns), and the horizon.
	lockStateSQL = `
		SELECT t.generation, t.total_partitions, c.last_transaction_id, c.last_global_position,
		       pg_snapshot_xmin(pg_current_snapshot())
		FROM projection_topology t
		JOIN projection_checkpoints c ON c.projection_name = t.projection_name AND c.partition_key = $2
		WHERE t.projection_name = $1
		FOR SHARE OF t FOR UPDATE OF c`
	// shareTopologySQL reads the topology when lockStateSQL found no row
	// (no topology, a key outside it, or no checkpoint yet), holding it FOR
	// SHARE as a batch does.
	shareTopologySQL = `
		SELECT generation, total_partitions FROM projection_topology WHERE projection_name = $1 FOR SHARE`
	// createTopologySQL creates a projection's first topology, generation
	// 1 with $2 partitions; a topology that exists (created concurrently)
	// is left as it is. SetTopologyAs creates it this way too.
	createTopologySQL = `
		INSERT INTO projection_topology (projection_name, generation, total_partitions)
		VALUES ($1, 1, $2) ON CONFLICT (projection_name) DO NOTHING`
	// createCheckpointSQL creates a partition's checkpoint at the
	// beginning of the log, under the topology's generation; one created
	// concurrently is left as it is.
	createCheckpointSQL = `
		INSERT INTO projection_checkpoints (projection_name, partition_key, total_partitions, generation,
		                                    aggregate_types, bounded_contexts)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (projection_name, partition_key) DO NOTHING`
	// recordScopeSQL records the projection's scope ($3 aggregate types,
	// $4 bounded contexts; NULL for all) on the partition's checkpoint,
	// which the batch holds FOR UPDATE, for lag read from the database
	// (progressSQL); a scope recorded already is not written again.
	recordScopeSQL = `
		UPDATE projection_checkpoints SET aggregate_types = $3, bounded_contexts = $4
		WHERE projection_name = $1 AND partition_key = $2
		  AND (aggregate_types IS DISTINCT FROM $3 OR bounded_contexts IS DISTINCT FROM $4)`
	// saveCheckpointSQL advances a partition's checkpoint to ($3, $4) and
	// counts the $5 events handled, in the batch's transaction, pipelined
	// with its COMMIT.
	saveCheckpointSQL = `
		UPDATE projection_checkpoints
		SET last_transaction_id = $3, last_global_position = $4,
		    events_processed = events_processed + $5, updated_at = now()
		WHERE projection_name = $1 AND partition_key = $2`
	// recordDeadLetterSQL parks a poison event under ErrorPolicyDeadLetter,
	// in the batch's transaction; one parked already keeps its row, with
	// the new error and time.
	recordDeadLetterSQL = `INSERT INTO projection_dead_letters
		(projection_name, event_id, partition_key, global_position, transaction_id, aggregate_type, aggregate_id, event_type, error)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (projection_name, event_id) DO UPDATE SET error = EXCLUDED.error, failed_at = now()`
)

// The topology and its switch (topology.go: GetTopology, setTopology,
// loadFrontier, EventsProcessed).
const (
	// readTopologySQL reads a projection's topology row without locking
	// it: setTopology's common case, nothing to do, must not queue behind
	// the batches' FOR SHARE.
	readTopologySQL = "SELECT generation, total_partitions, managed_by, coalesce(owner, '') FROM projection_topology WHERE projection_name = $1"
	// readTopologyForUpdateSQL is readTopologySQL holding the row FOR
	// UPDATE: a switch waits for the batches in flight (each holds it FOR
	// SHARE) and fences every later one of the old generation.
	readTopologyForUpdateSQL = readTopologySQL + " FOR UPDATE"
	// claimTopologySQL makes a topology managed by $2 (the operator).
	claimTopologySQL = `UPDATE projection_topology SET managed_by = $2 WHERE projection_name = $1`
	// claimOwnerSQL records $2 as the owner of a topology that has none
	// (TopologyOptions.Owner, ClaimTopology); the caller holds the row.
	claimOwnerSQL = `UPDATE projection_topology SET owner = $2 WHERE projection_name = $1 AND owner IS NULL`
	// releaseOwnerSQL gives up owner $2's claim (ReleaseTopology).
	releaseOwnerSQL = `UPDATE projection_topology SET owner = NULL WHERE projection_name = $1 AND owner = $2`
	// finalCheckpointsSQL reads the old generation's final checkpoint
	// vector: every partition's checkpoint, by key.
	finalCheckpointsSQL = `SELECT partition_key, last_transaction_id, last_global_position
		FROM projection_checkpoints WHERE projection_name = $1`

	// The switch, queued in one pgx.Batch in this order.

	// insertFrontierSQL records partition $4's final checkpoint in the
	// frontier of generation $2 of $3 partitions.
	insertFrontierSQL = `INSERT INTO projection_frontier (projection_name, generation, total_partitions, partition_key, last_transaction_id, last_global_position)
			VALUES ($1, $2, $3, $4, $5, $6)`
	// addEventsProcessedBeforeSQL keeps the count of events handled by the
	// old generation, whose checkpoints (which count them) are deleted
	// next, so that EventsProcessed spans every generation.
	addEventsProcessedBeforeSQL = `UPDATE projection_topology SET events_processed_before = events_processed_before +
		(SELECT coalesce(sum(events_processed), 0) FROM projection_checkpoints WHERE projection_name = $1)
		WHERE projection_name = $1`
	// deleteCheckpointsSQL deletes every checkpoint of a projection (also
	// for ResetProjection and ForgetProjection).
	deleteCheckpointsSQL = `DELETE FROM projection_checkpoints WHERE projection_name = $1`
	// startCheckpointsSQL creates the $2 checkpoints of the new generation
	// $3, every one at the start ($4, $5): the minimum of the old vector.
	startCheckpointsSQL = `INSERT INTO projection_checkpoints (projection_name, partition_key, total_partitions, generation, last_transaction_id, last_global_position)
		SELECT $1, k, $2, $3, $4, $5 FROM generate_series(0, $2 - 1) AS k`
	// switchGenerationSQL makes the topology generation $2 of $3
	// partitions, switched by $4.
	switchGenerationSQL = `UPDATE projection_topology SET generation = $2, total_partitions = $3, updated_at = now(),
		switched_by = $4, switched_at = now()
		WHERE projection_name = $1`
	// pruneFrontierSQL drops the frontier entries of generations whose highest
	// position every live checkpoint of the projection has reached.
	pruneFrontierSQL = `
WITH entry_max AS (
    SELECT DISTINCT ON (generation) generation, last_transaction_id AS x, last_global_position AS p
    FROM projection_frontier WHERE projection_name = $1
    ORDER BY generation, last_transaction_id DESC, last_global_position DESC
)
DELETE FROM projection_frontier f USING entry_max m
WHERE f.projection_name = $1 AND f.generation = m.generation
  AND NOT EXISTS (SELECT 1 FROM projection_checkpoints c
                  WHERE c.projection_name = $1
                    AND (c.last_transaction_id, c.last_global_position) < (m.x, m.p))`

	// loadFrontierSQL reads a projection's frontier, entry by entry, for a
	// processor whose generation or partition count changed.
	loadFrontierSQL = `SELECT generation, total_partitions, partition_key, last_transaction_id, last_global_position
		FROM projection_frontier WHERE projection_name = $1 ORDER BY generation, partition_key`
	// eventsProcessedSQL counts the events a projection has handled, in
	// earlier generations and in the current one's checkpoints; 0 for one
	// without a topology.
	eventsProcessedSQL = `SELECT
		coalesce((SELECT events_processed_before FROM projection_topology WHERE projection_name = $1), 0) +
		coalesce((SELECT sum(events_processed) FROM projection_checkpoints WHERE projection_name = $1), 0)`
)

// Deleting a projection's rows (topology.go: ResetProjection,
// ForgetProjection; reset.go: ApplyPendingReset). With deleteCheckpointsSQL
// above and discardAllDeadLettersSQL below.
const (
	// lockTopologySQL holds the topology FOR UPDATE, as a switch does, so
	// that the batches in flight finish before the deletion (or reset) and
	// later ones see it.
	lockTopologySQL   = "SELECT 1 FROM projection_topology WHERE projection_name = $1 FOR UPDATE"
	deleteFrontierSQL = "DELETE FROM projection_frontier WHERE projection_name = $1"
	deleteResetsSQL   = "DELETE FROM projection_resets WHERE projection_name = $1"
	deleteTopologySQL = "DELETE FROM projection_topology WHERE projection_name = $1"
)

// Reset requests (reset.go).
const (
	// requestResetSQL requests a reset under token $2. The token already
	// requested changes nothing (a request is idempotent); another one
	// replaces it and clears the last hook error.
	requestResetSQL = `
		INSERT INTO projection_resets (projection_name, requested_token) VALUES ($1, $2)
		ON CONFLICT (projection_name) DO UPDATE
		SET requested_token = EXCLUDED.requested_token, requested_at = now(), last_error = NULL
		WHERE projection_resets.requested_token <> EXCLUDED.requested_token`
	// readResetSQL reads a projection's reset request and its outcome.
	readResetSQL = `SELECT requested_token, requested_at, coalesce(done_token, ''), coalesce(done_at, 'epoch'),
	coalesce(done_by, ''), coalesce(error, ''), coalesce(last_error, '')
	FROM projection_resets WHERE projection_name = $1`
	// readResetForUpdateSQL is readResetSQL holding the request FOR
	// UPDATE: workers that start at once queue on it, and the first one
	// carries it out.
	readResetForUpdateSQL = readResetSQL + " FOR UPDATE"
	// completeResetSQL carries out (error $4 null) or refuses the pending
	// request $2 of projection $1 for $3, in the caller's transaction, through
	// the function of migration 0009: a worker's role may do that without the
	// right to delete checkpoints itself (docs/least-privilege.sql).
	completeResetSQL = `SELECT projection_complete_reset($1, $2, $3, $4)`
	// recordResetErrorSQL records the Reset hook's error $2 on the pending
	// request $3, unless another request replaced it meanwhile.
	recordResetErrorSQL = `UPDATE projection_resets SET last_error = $2 WHERE projection_name = $1 AND requested_token = $3`
)

// Dead letters (deadletters.go), with recordDeadLetterSQL above.
const (
	deadLetterColumns = `projection_name, event_id, partition_key, global_position, transaction_id,
		aggregate_type, aggregate_id, event_type, error, failed_at, retry_requested_at, retries`
	listDeadLettersSQL = `SELECT ` + deadLetterColumns + ` FROM projection_dead_letters
		WHERE projection_name = $1 AND ($2::integer IS NULL OR partition_key = $2)
		ORDER BY transaction_id, global_position LIMIT $3`
	getDeadLetterSQL = `SELECT ` + deadLetterColumns + ` FROM projection_dead_letters
		WHERE projection_name = $1 AND event_id = $2`
	countDeadLettersSQL = `SELECT count(*) FROM projection_dead_letters WHERE projection_name = $1`
	// A request already pending keeps its time, so that requesting twice
	// is the same as once.
	retryDeadLetterSQL = `UPDATE projection_dead_letters SET retry_requested_at = coalesce(retry_requested_at, now())
		WHERE projection_name = $1 AND event_id = $2`
	retryAllDeadLettersSQL = `UPDATE projection_dead_letters SET retry_requested_at = coalesce(retry_requested_at, now())
		WHERE projection_name = $1`
	// discardDeadLetterSQL also deletes a dead letter whose retry applied
	// its event, in the retry's transaction.
	discardDeadLetterSQL = `DELETE FROM projection_dead_letters WHERE projection_name = $1 AND event_id = $2`
	// discardAllDeadLettersSQL also deletes the dead letters of a
	// projection reset or forgotten: the replay meets their events again.
	discardAllDeadLettersSQL = `DELETE FROM projection_dead_letters WHERE projection_name = $1`

	// retryCandidatesSQL finds requested retries without locking them:
	// the owner of each is decided in Go (any PartitionStrategy), and
	// each is locked in its own transaction.
	retryCandidatesSQL = `SELECT event_id, aggregate_id FROM projection_dead_letters
		WHERE projection_name = $1 AND retry_requested_at IS NOT NULL
		ORDER BY transaction_id, global_position LIMIT $2`
	// retryLockStateSQL holds the topology FOR SHARE (no switch changes
	// the owner while the retry runs) and the partition's checkpoint FOR
	// UPDATE (a processor with the same key takes turns with it), as a
	// batch does.
	retryLockStateSQL = `SELECT t.generation, t.total_partitions
		FROM projection_topology t
		JOIN projection_checkpoints c ON c.projection_name = t.projection_name AND c.partition_key = $2
		WHERE t.projection_name = $1
		FOR SHARE OF t FOR UPDATE OF c`
	// retryLockSQL takes the dead letter for this retry; a concurrent
	// retry of the same one skips it, and one that was applied or
	// discarded meanwhile is gone.
	retryLockSQL = `SELECT event_id FROM projection_dead_letters
		WHERE projection_name = $1 AND event_id = $2 AND retry_requested_at IS NOT NULL
		FOR UPDATE SKIP LOCKED`
	// retryFailedSQL records a failed retry's error $3 and withdraws the
	// request: a retry never stops a processor, nor runs again unasked.
	retryFailedSQL = `UPDATE projection_dead_letters
		SET error = $3, failed_at = now(), retry_requested_at = NULL, retries = retries + 1
		WHERE projection_name = $1 AND event_id = $2`
)

// Lag (progress.go: GetProgress, GetPartitionLag).
//
// Lag counts the events a partition will still pass: after its read
// position, in read order, that hash to it and lie in its scope (the
// aggregate types and bounded contexts a ScopedProjection reads, recorded
// on its checkpoint by recordScopeSQL; NULL for all). To bound the cost of
// a reading whatever the scope and the partition count, it examines at most
// a limit of events after the position (LagCountLimit), in the order of the
// events' (transaction_id, global_position) index, and counts those that
// are the partition's: a partition further behind reads "at least".

// lagBeyondSQL is lag from one read position (GetPartitionLag, and the
// projection_lag view of migration 0014, which spells it out because a
// migration is frozen): of the first {limit} events after the position,
// the number that hash to partition {key} of {total} and lie in the scope,
// the oldest one's append time, and how many it examined. The placeholders
// name the caller's columns or parameters (never values): {x} and {p} the
// position, {types} and {contexts} the scope (text[], NULL for all).
const lagBeyondSQL = `
	SELECT count(*) FILTER (WHERE w.mine) AS n, min(w.created_at) FILTER (WHERE w.mine) AS oldest,
	       count(*) AS examined FROM (
		SELECT e.created_at,
		       e.partition_hash % {total} = {key}
		       AND ({types}::text[] IS NULL OR e.aggregate_type = ANY({types}::text[]))
		       AND ({contexts}::text[] IS NULL OR e.bounded_context = ANY({contexts}::text[])) AS mine
		FROM events e
		WHERE (e.transaction_id, e.global_position) > ({x}, {p})
		ORDER BY e.transaction_id, e.global_position
		LIMIT {limit}) AS w`

// lagBeyond returns lagBeyondSQL with its placeholders filled in.
func lagBeyond(x, p, key, total, types, contexts, limit string) string {
	return strings.NewReplacer("{x}", x, "{p}", p, "{key}", key, "{total}", total, "{types}", types,
		"{contexts}", contexts, "{limit}", limit).Replace(lagBeyondSQL)
}

// progressSQL reads the topology, the head and every partition of the
// current generation with its lag, in one statement and one snapshot. A
// partition that has not run yet has no checkpoint row: it starts at the
// beginning of the log and counts every event (no scope recorded).
//
// The lag of all partitions comes from one walk of the index: the first $2
// events after the furthest-behind checkpoint (win), each counted for the
// partition it hashes to when it lies after that partition's checkpoint
// and in its scope. A lagBeyondSQL per partition would walk the backlog
// once per partition (issue 32: four partitions at the start of a rebuild
// of a 657k-event log took over 5 s). Per partition it also returns the
// lowest global position among the events counted (Progress.PassedHead),
// and whether the walk stopped at $2 events (then every count is "at
// least"). passed is the last event at or before the checkpoint.
const progressSQL = `
	WITH t AS (SELECT generation, total_partitions FROM projection_topology WHERE projection_name = $1),
	c AS (
		SELECT k.key, coalesce(cp.last_transaction_id, '0') AS x, coalesce(cp.last_global_position, 0) AS p,
		       cp.updated_at, cp.aggregate_types AS types, cp.bounded_contexts AS contexts
		FROM t CROSS JOIN generate_series(0, t.total_partitions - 1) AS k(key)
		LEFT JOIN projection_checkpoints cp
		       ON cp.projection_name = $1 AND cp.partition_key = k.key AND cp.generation = t.generation),
	lo AS (SELECT x, p FROM c ORDER BY x, p LIMIT 1),
	win AS (
		SELECT e.transaction_id AS x, e.global_position AS p, e.partition_hash % t.total_partitions AS key,
		       t.generation, e.aggregate_type, e.bounded_context, e.created_at
		FROM t, lo, LATERAL (
			SELECT e.transaction_id, e.global_position, e.partition_hash, e.aggregate_type, e.bounded_context, e.created_at
			FROM events e
			WHERE (e.transaction_id, e.global_position) > (lo.x, lo.p)
			ORDER BY e.transaction_id, e.global_position
			LIMIT $2) AS e),
	beyond AS (
		SELECT w.key, count(*) FILTER (WHERE w.mine) AS n, min(w.created_at) FILTER (WHERE w.mine) AS oldest,
		       min(w.p) FILTER (WHERE w.mine) AS lowest, count(*) AS examined
		FROM (
			SELECT w.key, w.p, w.created_at,
			       cp.projection_name IS NULL
			       OR (w.x, w.p) > (cp.last_transaction_id, cp.last_global_position)
			          AND (cp.aggregate_types IS NULL OR w.aggregate_type = ANY(cp.aggregate_types))
			          AND (cp.bounded_contexts IS NULL OR w.bounded_context = ANY(cp.bounded_contexts)) AS mine
			FROM win w
			LEFT JOIN projection_checkpoints cp
			       ON cp.projection_name = $1 AND cp.partition_key = w.key AND cp.generation = w.generation) AS w
		GROUP BY w.key)
	SELECT now(), t.generation, t.total_partitions,
	       coalesce((SELECT max(global_position) FROM events), 0),
	       c.key, c.x, c.p, c.updated_at,
	       coalesce(passed.global_position, 0), coalesce(beyond.n, 0), beyond.oldest, coalesce(beyond.lowest, 0),
	       coalesce((SELECT sum(examined) FROM beyond), 0) >= $2
	FROM (SELECT 1) AS one
	LEFT JOIN t ON true
	LEFT JOIN c ON true
	LEFT JOIN LATERAL (
		SELECT e.global_position FROM events e
		WHERE (e.transaction_id, e.global_position) <= (c.x, c.p)
		ORDER BY e.transaction_id DESC, e.global_position DESC LIMIT 1) AS passed ON c.key IS NOT NULL
	LEFT JOIN beyond ON beyond.key = c.key
	ORDER BY c.key`

// partitionLagSQL measures one partition's lag with lagBeyondSQL, from a
// given position or the stored checkpoint, in a given scope. A key outside
// the topology, or a projection without one, has no lag.
var partitionLagSQL = `
	SELECT now(), coalesce(beyond.n, 0), beyond.oldest, coalesce(beyond.examined, 0) >= $7
	FROM (SELECT 1) AS one
	LEFT JOIN projection_topology t ON t.projection_name = $1 AND $2::int < t.total_partitions
	LEFT JOIN LATERAL (
		SELECT coalesce($3::xid8, max(cp.last_transaction_id), '0') AS x,
		       coalesce($4::bigint, max(cp.last_global_position), 0) AS p
		FROM projection_checkpoints cp
		WHERE cp.projection_name = $1 AND cp.partition_key = $2 AND cp.generation = t.generation) AS c ON true
	LEFT JOIN LATERAL (` + lagBeyond("c.x", "c.p", "$2::bigint", "t.total_partitions", "$5", "$6", "$7") + `) AS beyond
	       ON t.projection_name IS NOT NULL`

// Partition indexes: the catalog (partition_index.go).
const (
	// listPartitionIndexesSQL lists the indexes on the events table the
	// connection's search_path finds, whatever their names (the caller
	// keeps PartitionIndexName's), with whether a build of each is in
	// progress, and their sizes.
	listPartitionIndexesSQL = `
		SELECT c.relname, i.indisvalid AND i.indisready,
		       EXISTS (SELECT FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid),
		       pg_relation_size(i.indexrelid)
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE i.indrelid = 'events'::regclass AND c.relname LIKE 'events\_partitions\_%\_idx'`
	// partitionIndexUsersSQL reads every projection's partition count, for
	// PartitionIndex.UsedBy.
	partitionIndexUsersSQL = `
		SELECT total_partitions, projection_name FROM projection_topology ORDER BY projection_name`
	// eventsSchemaSQL is the schema of the events table the search_path
	// finds: the partition indexes' DDL names it, so that a DROP never
	// finds a same-named index of another schema earlier on the path.
	eventsSchemaSQL = `
		SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = 'events'::regclass`
	// partitionIndexValidSQL: whether processors of n partitions can read
	// through the partition index named $1.
	partitionIndexValidSQL = `
		SELECT coalesce(bool_or(i.indisvalid AND i.indisready), false)
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE i.indrelid = 'events'::regclass AND c.relname = $1`
)
