// Package projectiontest runs a projection's tests against a real
// PostgreSQL: each test gets an empty database of its own, dropped when
// the test ends, on a throwaway server the first call starts.
//
//	func TestMain(m *testing.M) { projectiontest.Main(m) }
//
//	func TestUserCount(t *testing.T) {
//		dsn := projectiontest.NewDatabase(t)
//		// open a pool, projection.Migrate, append events, run the
//		// processor, and check the read model
//	}
//
// [NewPool] does the first two steps: a pool on a new database that already
// has the event store's tables.
//
// The server is a PostgreSQL cluster made with initdb in a temporary
// directory, on a free loopback port, with fsync off; it needs the server
// binaries (initdb, postgres: Debian's and Ubuntu's postgresql-NN
// packages, found through pg_config or under /usr/lib/postgresql, or in
// the directory $PROJECTIONIST_POSTGRES_BIN names). When the tests run as
// root, the server runs as the "postgres" user, because PostgreSQL refuses
// to run as root. To use an existing server instead, set
// $PROJECTIONIST_TEST_DATABASE_URL to a connection string whose role may
// create databases.
package projectiontest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

const (
	// EnvDatabaseURL names an existing server (a connection string whose
	// role may create databases) to use instead of starting one.
	EnvDatabaseURL = pgtest.EnvDatabaseURL
	// EnvPostgresBin names the directory holding initdb and postgres.
	EnvPostgresBin = pgtest.EnvPostgresBin
)

// Main runs the tests, then stops the server if this process started one.
// Call it from TestMain.
func Main(m *testing.M) { pgtest.Main(m) }

// NewDatabase creates an empty database for this test on the test server
// (starting it on first use) and returns its connection string. The
// database is dropped when the test ends; the test fails if no server can
// be started.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	return pgtest.NewDatabase(tb)
}

// NewPool creates a database for this test as [NewDatabase] does, runs
// [projection.Migrate] in it, and returns a pool connected to it, closed
// when the test ends. The test fails if any step does.
func NewPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	pool := pgtest.NewPool(tb)
	if _, err := projection.Migrate(context.Background(), pool); err != nil {
		tb.Fatalf("migrating: %v", err)
	}
	return pool
}
