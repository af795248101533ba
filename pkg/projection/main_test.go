package projection_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/projection/projectiontest"
)

func TestMain(m *testing.M) { projectiontest.Main(m) }

// newPool returns a pool on a fresh, migrated database of this test's own.
func newPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	return projectiontest.NewPool(tb)
}
