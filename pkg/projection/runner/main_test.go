package runner_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newPool returns a pool on a fresh, migrated database of this test's own.
func newPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	pool := pgtest.NewPool(tb)
	if _, err := projection.Migrate(context.Background(), pool); err != nil {
		tb.Fatalf("migrating: %v", err)
	}
	return pool
}
