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
