package projectiontest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/pkg/projection/projectiontest"
)

// Each test gets an empty database of its own, which takes the schema,
// and which is gone once the test has ended.
func TestNewDatabase(t *testing.T) {
	ctx := context.Background()
	var names [2]string
	for i := range names {
		t.Run("test", func(t *testing.T) {
			conn, err := pgx.Connect(ctx, projectiontest.NewDatabase(t))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var tables int
			if err := conn.QueryRow(ctx, `SELECT current_database(), (SELECT count(*) FROM pg_tables WHERE schemaname = 'public')`).
				Scan(&names[i], &tables); err != nil {
				t.Fatal(err)
			}
			if tables != 0 {
				t.Errorf("database %s has %d tables, want none", names[i], tables)
			}
			if _, err := projection.Migrate(ctx, conn); err != nil {
				t.Fatalf("migrating the test database: %v", err)
			}
		})
	}
	if names[0] == names[1] {
		t.Fatalf("both tests got database %s", names[0])
	}
	conn, err := pgx.Connect(ctx, projectiontest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var left int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = ANY($1)`, names[:]).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d of the ended tests' databases %v are left", left, names)
	}
}

// NewPool's database is one of the test's own, with every migration
// applied and no events.
func TestNewPool(t *testing.T) {
	ctx := context.Background()
	a, b := projectiontest.NewPool(t), projectiontest.NewPool(t)
	var nameA, nameB string
	var events int
	if err := a.QueryRow(ctx, `SELECT current_database(), (SELECT count(*) FROM events)`).Scan(&nameA, &events); err != nil {
		t.Fatalf("querying the events table: %v", err)
	}
	if events != 0 {
		t.Errorf("a new database holds %d events, want none", events)
	}
	if err := b.QueryRow(ctx, `SELECT current_database()`).Scan(&nameB); err != nil {
		t.Fatal(err)
	}
	if nameA == nameB {
		t.Errorf("both pools are on database %s", nameA)
	}
	// Every migration is applied already: migrating again applies none.
	if applied, err := projection.Migrate(ctx, a); err != nil || len(applied) != 0 {
		t.Errorf("migrating again applied %v (%v), want none", applied, err)
	}
}
