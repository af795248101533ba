package controllers_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/projectionist/projectionist/internal/pgtest"
)

// A connection string whose search_path names a schema puts the operator's
// migrations and topology there: the Projection comes up with its
// partitions in that schema, and public stays empty.
func TestProjectionInASchemaOfItsOwn(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	dsn := pgtest.NewDatabase(t)
	admin := pgtest.OpenPool(t, dsn)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA shop"); err != nil {
		t.Fatal(err)
	}
	newSecret(t, ns, "db", map[string]string{"dsn": pgtest.WithSearchPath(dsn, "shop")})
	newProjection(t, ns, "user-count", "user_count", 2)

	eventually(t, 60*time.Second, "2 partitions in schema shop", func() error {
		p := getProjection(t, ns, "user-count")
		var n int
		if err := admin.QueryRow(ctx, `SELECT total_partitions FROM shop.projection_topology WHERE projection_name = 'user_count'`).Scan(&n); err != nil {
			return fmt.Errorf("shop.projection_topology: %w", err)
		}
		if n != 2 || p.Status.Partitions != 2 {
			return fmt.Errorf("topology %d, status.partitions %d", n, p.Status.Partitions)
		}
		return nil
	})
	var inPublic int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&inPublic); err != nil {
		t.Fatal(err)
	}
	if inPublic != 0 {
		t.Errorf("%d tables in public, want none", inPublic)
	}
}
