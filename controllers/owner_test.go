package controllers_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// ownerRow is the projection's topology row as the owner test reads it:
// "partitions/generation owner", owner "-" for none, "" for no row.
func ownerRow(t *testing.T, db *pgxpool.Pool, name string) string {
	t.Helper()
	return pgtest.QueryValue[string](t, db, `SELECT coalesce(
		(SELECT total_partitions || '/' || generation || ' ' || coalesce(owner, '-') FROM projection_topology WHERE projection_name = $1), '')`, name)
}

// waitGone waits until Projection name is deleted for good: its finalizer
// removed.
func waitGone(t *testing.T, ns, name string) {
	t.Helper()
	eventually(t, 30*time.Second, "Projection "+name+" gone", func() error {
		var p v1alpha1.Projection
		err := k8sClient.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: name}, &p)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (finalizers %v): %v", p.Finalizers, err)
	})
}

// Two Projections naming one projection in one database (issue 32.1: a
// copied manifest). The first owns the name: it adopts the topology an
// operator without owners set up, and stays Ready. The second changes
// nothing there (the generation stays 1, with the first's 3 partitions),
// runs no pods, and is Degraded with reason ProjectionNameInUse naming the
// first. Deleting the first (deletionPolicy Retain, the default) releases
// the name and keeps the rows; the second then takes over and switches to
// its own count.
func TestSecondProjectionWithTheSameNameChangesNothing(t *testing.T) {
	ns := newNamespace(t)
	db := newMigratedDatabase(t, ns)
	// A topology the operator set up before owners existed: no owner.
	if _, err := projection.SetTopologyAs(t.Context(), db, "revenue", 3,
		projection.TopologyOptions{ManagedBy: projection.ManagerOperator}); err != nil {
		t.Fatal(err)
	}
	first := newProjection(t, ns, "revenue", "revenue", 3)
	firstOwner := fmt.Sprintf("Projection %s/revenue (uid %s)", ns, first.UID)
	eventually(t, 30*time.Second, "the first Projection owning the topology", func() error {
		if got, want := ownerRow(t, db, "revenue"), "3/1 "+firstOwner; got != want {
			return fmt.Errorf("topology row %q, want %q", got, want)
		}
		return nil
	})
	ready := func(name string) error {
		p := getProjection(t, ns, name)
		if !strings.HasPrefix(condition(p, v1alpha1.ConditionReady), "True/") || !strings.HasPrefix(condition(p, v1alpha1.ConditionDegraded), "False/") {
			return fmt.Errorf("Ready %q, Degraded %q", condition(p, v1alpha1.ConditionReady), condition(p, v1alpha1.ConditionDegraded))
		}
		return nil
	}
	eventually(t, 60*time.Second, "the first Projection Ready", func() error { return ready("revenue") })

	newProjection(t, ns, "revenue-copy", "revenue", 2)
	eventually(t, 30*time.Second, "the copy Degraded ProjectionNameInUse naming the owner, with no pods", func() error {
		p := getProjection(t, ns, "revenue-copy")
		degraded := condition(p, v1alpha1.ConditionDegraded)
		if !strings.HasPrefix(degraded, "True/"+v1alpha1.ReasonProjectionNameInUse+": ") || !strings.Contains(degraded, firstOwner) {
			return fmt.Errorf("Degraded %q", degraded)
		}
		if got := condition(p, v1alpha1.ConditionReady); !strings.HasPrefix(got, "False/"+v1alpha1.ReasonProjectionNameInUse) {
			return fmt.Errorf("Ready %q", got)
		}
		if got := condition(p, v1alpha1.ConditionProgressing); !strings.HasPrefix(got, "False/"+v1alpha1.ReasonBlocked) {
			return fmt.Errorf("Progressing %q", got)
		}
		sts, err := getStatefulSet(t, ns, "revenue-copy")
		if err != nil {
			return err
		}
		if *sts.Spec.Replicas != 0 {
			return fmt.Errorf("StatefulSet replicas %d, want 0", *sts.Spec.Replicas)
		}
		return nil
	})
	// The copy has reconciled (its status says so) and the first keeps
	// reconciling: neither moved the topology, nor its owner.
	if got, want := ownerRow(t, db, "revenue"), "3/1 "+firstOwner; got != want {
		t.Fatalf("with the copy, the topology row is %q, want %q (unchanged)", got, want)
	}
	if err := ready("revenue"); err != nil {
		t.Fatalf("the first Projection beside the copy: %v", err)
	}
	for _, e := range listEvents(t, ns) {
		if e.InvolvedObject.Name == "revenue-copy" && e.Reason == "TopologySwitched" {
			t.Errorf("the copy switched the topology: %s", e.Message)
		}
	}

	// Deleting the owner releases the name (Retain keeps the rows); the
	// copy takes over on its next pass.
	if err := k8sClient.Delete(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	waitGone(t, ns, "revenue")
	copyUID := getProjection(t, ns, "revenue-copy").UID
	eventually(t, 30*time.Second, "the copy owning the topology and switching it to 2", func() error {
		if got, want := ownerRow(t, db, "revenue"), fmt.Sprintf("2/2 Projection %s/revenue-copy (uid %s)", ns, copyUID); got != want {
			return fmt.Errorf("topology row %q, want %q", got, want)
		}
		return nil
	})
	statefulSetReplicasAre(t, ns, "revenue-copy", 2)
	eventually(t, 60*time.Second, "the copy Ready", func() error { return ready("revenue-copy") })
}

// Deleting a Projection runs its spec.deletionPolicy: Forget deletes the
// projection's rows (topology, checkpoints, frontier), Retain keeps them
// and only releases the name. Every Projection gets the finalizer that
// does it, and one whose Secret is gone is not held back by it.
func TestDeletionPolicy(t *testing.T) {
	ns := newNamespace(t)
	db := newDatabase(t, ns)
	counts := func(name string) string {
		return fmt.Sprintf("checkpoints=%d frontier=%d",
			pgtest.QueryValue[int64](t, db, "SELECT count(*) FROM projection_checkpoints WHERE projection_name = $1", name),
			pgtest.QueryValue[int64](t, db, "SELECT count(*) FROM projection_frontier WHERE projection_name = $1", name))
	}
	before := map[string]string{}
	for _, name := range []string{"forget", "retain"} {
		p := newProjectionWithTopology(t, ns, db, name, name, 2)
		eventually(t, 30*time.Second, "the finalizer on "+name, func() error {
			if !controllerutil.ContainsFinalizer(getProjection(t, ns, name), v1alpha1.Finalizer) {
				return fmt.Errorf("finalizers %v", getProjection(t, ns, name).Finalizers)
			}
			return nil
		})
		// A switch leaves checkpoints (and a frontier) behind.
		mustUpdateSpec(t, ns, name, func(s *v1alpha1.ProjectionSpec) {
			s.Replicas = ptr.To[int32](3)
			if name == "forget" {
				s.DeletionPolicy = v1alpha1.DeletionForget
			}
		})
		eventually(t, 30*time.Second, name+" switched to 3", func() error {
			if got, want := ownerRow(t, db, name), fmt.Sprintf("3/2 Projection %s/%s (uid %s)", ns, name, p.UID); got != want {
				return fmt.Errorf("topology row %q, want %q", got, want)
			}
			return nil
		})
		before[name] = counts(name)
		if err := k8sClient.Delete(t.Context(), p); err != nil {
			t.Fatal(err)
		}
		waitGone(t, ns, name)
	}
	if got, counted := ownerRow(t, db, "forget"), counts("forget"); got != "" || counted != "checkpoints=0 frontier=0" {
		t.Errorf("after deleting with Forget: topology %q, %s; want no rows (before: %s)", got, counted, before["forget"])
	}
	if got, counted := ownerRow(t, db, "retain"), counts("retain"); got != "3/2 -" || counted != before["retain"] || before["retain"] == "checkpoints=0 frontier=0" {
		t.Errorf("after deleting with Retain: topology %q, %s; want \"3/2 -\" (no owner) and the rows as before (%s)", got, counted, before["retain"])
	}

	// No Secret: nothing can be released, and waiting would not help.
	lost := &v1alpha1.Projection{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "no-secret"},
		Spec:       v1alpha1.ProjectionSpec{Database: v1alpha1.DatabaseSpec{SecretRef: v1alpha1.SecretKeySelector{Name: "missing"}}},
	}
	if err := k8sClient.Create(t.Context(), lost); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the finalizer on no-secret", func() error {
		if !controllerutil.ContainsFinalizer(getProjection(t, ns, "no-secret"), v1alpha1.Finalizer) {
			return fmt.Errorf("no finalizer yet")
		}
		return nil
	})
	if err := k8sClient.Delete(t.Context(), lost); err != nil {
		t.Fatal(err)
	}
	waitGone(t, ns, "no-secret")
	waitForEvent(t, ns, "no-secret", "Warning", "ReleaseAbandoned", "SecretNotFound")

	// A database that refuses connections: retried, then let go after the
	// release timeout (3 s in this suite, 5 minutes by default).
	newSecret(t, ns, "down", map[string]string{"dsn": "postgres://projectionist:s3cret-pw@127.0.0.1:1/app?connect_timeout=1"})
	down := &v1alpha1.Projection{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db-down"},
		Spec:       v1alpha1.ProjectionSpec{Database: v1alpha1.DatabaseSpec{SecretRef: v1alpha1.SecretKeySelector{Name: "down"}}},
	}
	if err := k8sClient.Create(t.Context(), down); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the finalizer on db-down", func() error {
		if !controllerutil.ContainsFinalizer(getProjection(t, ns, "db-down"), v1alpha1.Finalizer) {
			return fmt.Errorf("no finalizer yet")
		}
		return nil
	})
	if err := k8sClient.Delete(t.Context(), down); err != nil {
		t.Fatal(err)
	}
	waitForEvent(t, ns, "db-down", "Warning", "ReleasePending", v1alpha1.ReasonDatabaseUnreachable)
	waitGone(t, ns, "db-down")
	waitForEvent(t, ns, "db-down", "Warning", "ReleaseAbandoned", v1alpha1.ReasonDatabaseUnreachable)
	for _, e := range listEvents(t, ns) {
		if strings.Contains(e.Message, "s3cret-pw") {
			t.Errorf("Event %s shows the password: %s", e.Reason, e.Message)
		}
	}
}
