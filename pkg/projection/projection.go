package projection

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Projection turns events into a read model.
type Projection interface {
	// Name identifies the projection's checkpoints; changing it starts the
	// projection over from the beginning of the log.
	Name() string
	// Handle applies one event. tx is the batch's transaction: write the
	// read model through it and the write commits atomically with the
	// checkpoint, so each event's effect lands exactly once. Returning an
	// error rolls the whole batch back; then the ErrorPolicy decides:
	// ErrorPolicyStop (the default) stops the processor with a
	// *HandlerError, ErrorPolicySkip and ErrorPolicyDeadLetter redo the
	// batch without the event and go on.
	Handle(ctx context.Context, tx pgx.Tx, event *PersistedEvent) error
}

// Func returns the Projection named name whose Handle is handle: a small
// projection, a test's or an example's, without a type of its own. As with
// a named type, changing the name starts the projection over.
//
//	audit := projection.Func("audit", func(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
//		_, err := tx.Exec(ctx, `INSERT INTO audit (event_id) VALUES ($1)`, e.EventID)
//		return err
//	})
func Func(name string, handle func(ctx context.Context, tx pgx.Tx, event *PersistedEvent) error) Projection {
	return funcProjection{name: name, handle: handle}
}

type funcProjection struct {
	name   string
	handle func(context.Context, pgx.Tx, *PersistedEvent) error
}

func (p funcProjection) Name() string { return p.name }

func (p funcProjection) Handle(ctx context.Context, tx pgx.Tx, event *PersistedEvent) error {
	return p.handle(ctx, tx, event)
}

// BatchProjection is a Projection that takes a batch's events in one call,
// so that it can write its read model in a few statements (a multi-row
// upsert through unnest, a COPY) instead of one round trip per event. The
// processor uses HandleBatch whenever the projection has it.
//
// The error policies stay exact. When HandleBatch fails with an error of
// the events (not the database's or the context's), the processor rolls
// the batch back, runs it again in a fresh transaction one event at a
// time, each through HandleBatch with a one-event slice, finds the event
// that fails, and applies the ErrorPolicy to that event only: Stop returns
// a *HandlerError naming it, Skip and DeadLetter redo the batch (again as a
// whole) without it. Every other event is applied exactly once. An error of
// the whole batch that no single event reproduces is not poison: the batch
// then commits as applied one event at a time.
//
// The processor never calls Handle of a BatchProjection: isolation judges
// each event by the same code that failed the batch. A projection with
// only a batch form can implement Handle as
// `return p.HandleBatch(ctx, tx, []PersistedEvent{*e})`, which keeps it
// usable by callers that apply single events.
type BatchProjection interface {
	Projection
	// HandleBatch applies events, in order, through tx, the batch's
	// transaction: the writes commit atomically with the checkpoint. The
	// events are those the partition must apply; events an earlier
	// topology generation applied, events of other partitions and events
	// the error policy set aside are left out, and HandleBatch is not called
	// when none remain. The processor reuses the slice after the call: keep
	// copies of events (a copied PersistedEvent stays valid), not the slice.
	// Returning an error rolls the whole batch back (see above).
	HandleBatch(ctx context.Context, tx pgx.Tx, events []PersistedEvent) error
}

// ScopedProjection is a Projection that only wants some events. The filter
// runs in SQL, so events out of scope are never fetched.
type ScopedProjection interface {
	Projection
	// AggregateTypes lists the aggregate types to receive; empty means all.
	AggregateTypes() []string
	// BoundedContexts lists the bounded contexts to receive; empty means all.
	BoundedContexts() []string
}

// BatchInfo says which partition and topology generation a batch belongs
// to. Handle can read it from its context with [BatchInfoFromContext].
type BatchInfo struct {
	// Projection is the projection's name.
	Projection string
	// PartitionKey is the partition running the batch.
	PartitionKey int
	// TotalPartitions and Generation are the topology the batch runs under.
	TotalPartitions int
	Generation      int64
}

type batchInfoKey struct{}

// BatchInfoFromContext returns the BatchInfo of the batch whose Handle
// received ctx.
func BatchInfoFromContext(ctx context.Context) (BatchInfo, bool) {
	info, ok := ctx.Value(batchInfoKey{}).(BatchInfo)
	return info, ok
}
