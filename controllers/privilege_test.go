package controllers_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/internal/pgtest"
)

// The operator needs no superuser: with a login in the
// projectionist_operator role of docs/least-privilege.sql it migrates the
// schema, sets the topology and scales.
func TestOperatorWithLeastPrivilege(t *testing.T) {
	db := pgtest.NewLeastPrivilege(t)
	ns := newNamespace(t)
	newSecret(t, ns, "db", map[string]string{"dsn": db.Login(t, "op", "projectionist_operator")})
	newProjection(t, ns, "least", "least", 2)
	eventually(t, 60*time.Second, "Ready with 2 partitions", func() error {
		p := getProjection(t, ns, "least")
		if got := condition(p, v1alpha1.ConditionReady); !strings.HasPrefix(got, "True/") || p.Status.Partitions != 2 {
			return fmt.Errorf("Ready is %q, %d partitions", got, p.Status.Partitions)
		}
		return nil
	})
	var owner string
	if err := db.Admin.QueryRow(t.Context(), "SELECT tableowner FROM pg_tables WHERE tablename = 'projection_topology'").Scan(&owner); err != nil || owner != "op" {
		t.Errorf("projection_topology is owned by %q (%v), want op: the operator migrated", owner, err)
	}
	if n, _ := topologyOf(t, db.Admin, "least"); n != 2 {
		t.Errorf("topology has %d partitions, want 2", n)
	}
}
