package projection_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/pkg/projection/projectiontest"
)

func TestMain(m *testing.M) { projectiontest.Main(m) }

// newPool returns a pool on a fresh, migrated database of this test's own.
func newPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	return projectiontest.NewPool(tb)
}

// newStore is the set-up most tests share: a store, and a pool on a fresh,
// migrated database of this test's own that each of steps then prepares in
// turn (newAppliedTable creates its read model, enableWakeups opts in).
func newStore(t *testing.T, steps ...func(testing.TB, *pgxpool.Pool)) (*pgxpool.Pool, *projection.Store) {
	t.Helper()
	pool := newPool(t)
	for _, step := range steps {
		step(t, pool)
	}
	return pool, projection.NewStore()
}
