package controllers_test

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/internal/pgtest"
)

// The operator needs no superuser: with a login in the
// projectionist_operator role of docs/least-privilege.sql it migrates the
// schema, sets the topology and scales.
func TestOperatorWithLeastPrivilege(t *testing.T) {
	ctx := t.Context()
	script, err := os.ReadFile("../docs/least-privilege.sql")
	if err != nil {
		t.Fatal(err)
	}
	srv := pgtest.NewServer(t) // roles are the server's, not the database's
	adminDSN := srv.NewDatabase(t)
	admin, err := pgxpool.New(ctx, adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec(ctx, string(script)); err != nil {
		t.Fatalf("docs/least-privilege.sql: %v", err)
	}
	if _, err := admin.Exec(ctx, "CREATE ROLE op LOGIN IN ROLE projectionist_operator"); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User("op")

	ns := newNamespace(t)
	newSecret(t, ns, "db", map[string]string{"dsn": u.String()})
	newProjection(t, ns, "least", "least", 2)
	eventually(t, 60*time.Second, "Ready with 2 partitions", func() error {
		p := getProjection(t, ns, "least")
		if got := condition(p, v1alpha1.ConditionReady); !strings.HasPrefix(got, "True/") || p.Status.Partitions != 2 {
			return fmt.Errorf("Ready is %q, %d partitions", got, p.Status.Partitions)
		}
		return nil
	})
	var owner string
	if err := admin.QueryRow(ctx, "SELECT tableowner FROM pg_tables WHERE tablename = 'projection_topology'").Scan(&owner); err != nil || owner != "op" {
		t.Errorf("projection_topology is owned by %q (%v), want op: the operator migrated", owner, err)
	}
	if n, _ := topologyOf(t, admin, "least"); n != 2 {
		t.Errorf("topology has %d partitions, want 2", n)
	}
}
