package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Querier is what [QueryValue] needs of a pool, a connection or a
// transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// QueryValue runs sql, which selects one row of one column, and returns
// that value; a failed query or scan fails tb, naming the statement. It
// runs outside the test's context, so it also works in cleanups.
func QueryValue[T any](tb testing.TB, db Querier, sql string, args ...any) T {
	tb.Helper()
	var v T
	if err := db.QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	return v
}
