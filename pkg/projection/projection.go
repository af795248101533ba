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
	// error rolls the whole batch back and stops the processor.
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
