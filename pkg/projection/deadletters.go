package projection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DeadLetter is an event a projection failed to handle under
// [ErrorPolicyDeadLetter], parked with its error until it is retried
// ([RetryDeadLetter]) or discarded ([DiscardDeadLetter]).
type DeadLetter struct {
	// Projection is the projection's name.
	Projection string
	// EventID is the event's id; with Projection, it names the dead letter.
	EventID uuid.UUID
	// PartitionKey is the partition that set the event aside. A retry is
	// applied by the partition that owns the aggregate under the topology
	// current at the time of the retry, which differs after a rescale.
	PartitionKey int
	// Position is the event's place in the log.
	Position Position
	// AggregateType and AggregateID name the event's aggregate.
	AggregateType string
	AggregateID   string
	// EventType is the event's type.
	EventType string
	// Error is what Handle returned the last time it failed on the event.
	Error string
	// FailedAt is when Handle last failed on the event.
	FailedAt time.Time
	// RetryRequestedAt is when a retry was requested and not yet run, or
	// the zero time.
	RetryRequestedAt time.Time
	// Retries counts the retries that failed.
	Retries int
}

// DeadLetterFilter narrows [ListDeadLetters].
type DeadLetterFilter struct {
	// PartitionKey, when not nil, keeps only the dead letters set aside
	// by that partition.
	PartitionKey *int
	// Limit is the most dead letters returned, oldest position first.
	// Defaults to 100.
	Limit int
}

// ErrDeadLetterNotFound is returned (wrapped) by [GetDeadLetter],
// [RetryDeadLetter] and [DiscardDeadLetter] when the projection has no dead
// letter with that event id: it never had one, or it was retried
// successfully or discarded meanwhile.
var ErrDeadLetterNotFound = errors.New("dead letter not found")

// defaultDeadLetterLimit is DeadLetterFilter.Limit's default.
const defaultDeadLetterLimit = 100

// retryEventSQL reads a dead letter's event for its retry (the statements
// on projection_dead_letters are in statements.go).
const retryEventSQL = `SELECT ` + eventColumns + ` FROM events WHERE event_id = $1`

func scanDeadLetters(rows pgx.Rows) ([]DeadLetter, error) {
	var out []DeadLetter
	var d DeadLetter
	var key, retries int32
	var requested *time.Time
	_, err := pgx.ForEachRow(rows, []any{&d.Projection, &d.EventID, &key, &d.Position.GlobalPosition, &d.Position.TransactionID,
		&d.AggregateType, &d.AggregateID, &d.EventType, &d.Error, &d.FailedAt, &requested, &retries}, func() error {
		d.PartitionKey, d.Retries, d.RetryRequestedAt = int(key), int(retries), time.Time{}
		if requested != nil {
			d.RetryRequestedAt = *requested
		}
		out = append(out, d)
		return nil
	})
	return out, err
}

// ListDeadLetters returns a projection's dead letters in the order the
// projection read them, narrowed by f.
func ListDeadLetters(ctx context.Context, db DBTX, projection string, f DeadLetterFilter) ([]DeadLetter, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = defaultDeadLetterLimit
	}
	rows, err := db.Query(ctx, listDeadLettersSQL, projection, f.PartitionKey, limit)
	if err != nil {
		return nil, deadLetterSchema(fmt.Errorf("listing dead letters of projection %q: %w", projection, err))
	}
	out, err := scanDeadLetters(rows)
	if err != nil {
		return nil, deadLetterSchema(fmt.Errorf("listing dead letters of projection %q: %w", projection, err))
	}
	return out, nil
}

// GetDeadLetter returns one dead letter, or an error matching
// [ErrDeadLetterNotFound].
func GetDeadLetter(ctx context.Context, db DBTX, projection string, eventID uuid.UUID) (DeadLetter, error) {
	rows, err := db.Query(ctx, getDeadLetterSQL, projection, eventID)
	if err != nil {
		return DeadLetter{}, deadLetterSchema(fmt.Errorf("reading dead letter %s of projection %q: %w", eventID, projection, err))
	}
	out, err := scanDeadLetters(rows)
	if err != nil {
		return DeadLetter{}, deadLetterSchema(fmt.Errorf("reading dead letter %s of projection %q: %w", eventID, projection, err))
	}
	if len(out) == 0 {
		return DeadLetter{}, fmt.Errorf("projection %q event %s: %w", projection, eventID, ErrDeadLetterNotFound)
	}
	return out[0], nil
}

// CountDeadLetters returns how many dead letters a projection has. It
// reads the primary key's index, so its cost grows with the projection's
// dead letters, not with the table.
func CountDeadLetters(ctx context.Context, db DBTX, projection string) (int64, error) {
	var n int64
	if err := db.QueryRow(ctx, countDeadLettersSQL, projection).Scan(&n); err != nil {
		return 0, deadLetterSchema(fmt.Errorf("counting dead letters of projection %q: %w", projection, err))
	}
	return n, nil
}

// RetryDeadLetter requests a retry of one dead letter. It returns at once:
// the processor that owns the event's aggregate under the current topology
// applies it within about a second, in a transaction of its own through
// the projection's Handle, and deletes the dead letter in that transaction,
// so the event is applied once however many retries are requested and
// whatever crashes. If Handle fails again, the dead letter stays with the
// new error and without the request, whatever the error policy (a retry
// never stops a processor); an error of the database or the context leaves
// the request for a later attempt.
//
// The event is applied after the events of its aggregate that followed it
// and were handled meanwhile: a projection that depends on per-aggregate
// order must tolerate that (or be rebuilt instead).
func RetryDeadLetter(ctx context.Context, db DBTX, projection string, eventID uuid.UUID) error {
	tag, err := db.Exec(ctx, retryDeadLetterSQL, projection, eventID)
	if err != nil {
		return deadLetterSchema(fmt.Errorf("requesting retry of dead letter %s of projection %q: %w", eventID, projection, err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("projection %q event %s: %w", projection, eventID, ErrDeadLetterNotFound)
	}
	return nil
}

// RetryAllDeadLetters requests a retry of every dead letter of a
// projection, as [RetryDeadLetter] does for one, and returns how many.
func RetryAllDeadLetters(ctx context.Context, db DBTX, projection string) (int64, error) {
	tag, err := db.Exec(ctx, retryAllDeadLettersSQL, projection)
	if err != nil {
		return 0, deadLetterSchema(fmt.Errorf("requesting retry of the dead letters of projection %q: %w", projection, err))
	}
	return tag.RowsAffected(), nil
}

// DiscardDeadLetter deletes one dead letter without applying its event.
// A retry running at the same moment finishes first: the event is then
// either applied (and the error matches [ErrDeadLetterNotFound]) or
// discarded, never both.
func DiscardDeadLetter(ctx context.Context, db DBTX, projection string, eventID uuid.UUID) error {
	tag, err := db.Exec(ctx, discardDeadLetterSQL, projection, eventID)
	if err != nil {
		return deadLetterSchema(fmt.Errorf("discarding dead letter %s of projection %q: %w", eventID, projection, err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("projection %q event %s: %w", projection, eventID, ErrDeadLetterNotFound)
	}
	return nil
}

// DiscardAllDeadLetters deletes every dead letter of a projection without
// applying them, and returns how many.
func DiscardAllDeadLetters(ctx context.Context, db DBTX, projection string) (int64, error) {
	tag, err := db.Exec(ctx, discardAllDeadLettersSQL, projection)
	if err != nil {
		return 0, deadLetterSchema(fmt.Errorf("discarding the dead letters of projection %q: %w", projection, err))
	}
	return tag.RowsAffected(), nil
}

// deadLetterSchema is noSchema that also takes a missing column for a
// schema not migrated: migration 0007 adds the retry request.
func deadLetterSchema(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42703" && !errors.Is(err, ErrNoSchema) {
		return fmt.Errorf("%w: %w", ErrNoSchema, err)
	}
	return noSchema(err)
}

// retryCheckInterval is how often, at most, a processor looks for
// requested retries: one indexed query a second, apart from its batches.
const retryCheckInterval = time.Second

// retryBatch is the most retries a processor runs between two batches.
const retryBatch = 100

// deadLetterRetrier is a batcher's state for running retries.
type deadLetterRetrier struct {
	due time.Time
}

// retryDeadLetters runs the requested retries this partition owns, each
// in its own transaction, at most every retryCheckInterval. A processor
// calls it before each batch.
func (b *batcher) retryDeadLetters(ctx context.Context) error {
	now := b.cfg.Clock.Now()
	if now.Before(b.retrier.due) {
		return nil
	}
	b.retrier.due = now.Add(retryCheckInterval)
	sctx, cancel := context.WithTimeout(ctx, b.cfg.StatementTimeout)
	defer cancel()
	rows, err := b.pool.Query(sctx, retryCandidatesSQL, b.name, retryBatch)
	if err != nil && ctx.Err() == nil && sctx.Err() != nil {
		// A database that stopped answering is reported here as by a
		// batch: with wakeups, this look-up is often the first round
		// trip after a quiet spell.
		return &TimeoutError{Projection: b.name, PartitionKey: b.cfg.PartitionKey, Op: "looking for dead-letter retries",
			Bound: "statement timeout", Timeout: b.cfg.StatementTimeout, Err: err}
	}
	if err != nil {
		return deadLetterSchema(b.wrap("looking for dead-letter retries", err))
	}
	type candidate struct {
		id          uuid.UUID
		aggregateID string
	}
	var cands []candidate
	var c candidate
	if _, err := pgx.ForEachRow(rows, []any{&c.id, &c.aggregateID}, func() error {
		cands = append(cands, c)
		return nil
	}); err != nil {
		return deadLetterSchema(b.wrap("looking for dead-letter retries", err))
	}
	for _, c := range cands {
		if err := b.retryOne(ctx, c.id, c.aggregateID); err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				err = &TimeoutError{Projection: b.name, PartitionKey: b.cfg.PartitionKey, Op: "retrying a dead letter",
					Bound: "batch timeout", Timeout: b.cfg.BatchTimeout, Err: err}
			}
			return err
		}
	}
	return nil
}

// retryOne applies one dead letter's event if this partition owns its
// aggregate now: Handle and the dead letter's deletion commit together, or
// Handle's error is recorded on the dead letter instead.
func (b *batcher) retryOne(ctx context.Context, id uuid.UUID, aggregateID string) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.BatchTimeout)
	defer cancel()
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return b.wrap("beginning dead-letter retry", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.StatementTimeout)
		_ = tx.Rollback(rctx) // a no-op after Commit
		cancel()
	}()
	var gen int64
	var total int32
	err = tx.QueryRow(ctx, retryLockStateSQL, b.name, b.cfg.PartitionKey).Scan(&gen, &total)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // no topology or no checkpoint for this key yet: a batch creates them
	}
	if err != nil {
		return b.wrap("locking topology for dead-letter retry", err)
	}
	if ownerOf(aggregateID, int(total), b.cfg.PartitionStrategy) != b.cfg.PartitionKey {
		return nil // another partition's, under the current topology
	}
	if err := tx.QueryRow(ctx, retryLockSQL, b.name, id).Scan(&id); errors.Is(err, pgx.ErrNoRows) {
		return nil // being retried elsewhere, applied, or discarded
	} else if err != nil {
		return b.wrap("locking dead letter for retry", err)
	}
	rows, err := tx.Query(ctx, retryEventSQL, id)
	if err != nil {
		return b.wrap("reading dead-lettered event", err)
	}
	var scanner eventScanner
	events, err := scanner.collect(rows, nil)
	if err != nil {
		return b.wrap("reading dead-lettered event", err)
	}
	var herr error
	if len(events) == 0 {
		herr = fmt.Errorf("event %s is no longer in the log", id)
	} else {
		herr = b.handleInSavepoint(ctx, tx, &events[0], gen, int(total))
		if herr != nil && !isPoison(ctx, tx, herr) {
			// The database or the context failed: the request stays for
			// a later attempt.
			return b.wrap(fmt.Sprintf("retrying dead-lettered event %s", id), herr)
		}
	}
	if herr == nil {
		if _, err := tx.Exec(ctx, discardDeadLetterSQL, b.name, id); err != nil {
			return b.wrap("deleting retried dead letter", err)
		}
	} else if _, err := tx.Exec(ctx, retryFailedSQL, b.name, id, herr.Error()); err != nil {
		return b.wrap("recording failed dead-letter retry", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return b.wrap("committing dead-letter retry", err)
	}
	if herr != nil {
		b.log.Warn("projection dead-letter retry failed; the event stays dead-lettered", "eventID", id, "error", herr.Error())
	} else {
		b.log.Info("projection dead-letter retry applied", "eventID", id, "position", events[0].GlobalPosition, "eventType", events[0].EventType)
	}
	return nil
}

// handleInSavepoint applies e under a savepoint, so that a failure
// undoes Handle's writes but keeps the transaction for recording the error.
func (b *batcher) handleInSavepoint(ctx context.Context, tx pgx.Tx, e *PersistedEvent, gen int64, total int) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	hctx := context.WithValue(ctx, batchInfoKey{}, BatchInfo{
		Projection: b.name, PartitionKey: b.cfg.PartitionKey, TotalPartitions: total, Generation: gen})
	// Through the same path as a batch's events: HandleBatch with a
	// one-event slice for a BatchProjection.
	if herr := b.handle(hctx, sp, []PersistedEvent{*e}); herr != nil {
		if err := sp.Rollback(ctx); err != nil {
			return err
		}
		return herr
	}
	return sp.Commit(ctx)
}
