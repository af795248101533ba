package demo

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/projection"
)

// The demo projections can be rebuilt declaratively (a Projection's
// spec.rebuildToken): each clears its own table.
var (
	_ projection.Resetter = (*UserCountProjection)(nil)
	_ projection.Resetter = (*RevenueProjection)(nil)
	_ projection.Resetter = (*ActivityLogProjection)(nil)
)

// Reset empties user_stats, for a rebuild.
func (*UserCountProjection) Reset(ctx context.Context, tx pgx.Tx) error {
	return truncate(ctx, tx, "user_stats")
}

// Reset empties revenue, for a rebuild: the replay adds every order again.
func (*RevenueProjection) Reset(ctx context.Context, tx pgx.Tx) error {
	return truncate(ctx, tx, "revenue")
}

// Reset empties activity_log, for a rebuild.
func (*ActivityLogProjection) Reset(ctx context.Context, tx pgx.Tx) error {
	return truncate(ctx, tx, "activity_log")
}

// truncate empties table through tx. TRUNCATE rather than DELETE: a
// rebuild clears everything, and TRUNCATE does it without scanning.
func truncate(ctx context.Context, tx pgx.Tx, table string) error {
	if _, err := tx.Exec(ctx, "TRUNCATE "+pgx.Identifier{table}.Sanitize()); err != nil {
		return fmt.Errorf("emptying %s: %w", table, err)
	}
	return nil
}
