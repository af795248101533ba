package controllers_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/internal/pgtest"
)

// projectionOn creates a Projection reading Secret secret.
func projectionOn(t *testing.T, ns, name, secret string, replicas int32) {
	t.Helper()
	p := &v1alpha1.Projection{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.ProjectionSpec{
			ProjectionName: strings.ReplaceAll(name, "-", "_"),
			Replicas:       ptr.To(replicas),
			Database:       v1alpha1.DatabaseSpec{SecretRef: v1alpha1.SecretKeySelector{Name: secret}},
		},
	}
	if err := k8sClient.Create(t.Context(), p); err != nil {
		t.Fatal(err)
	}
}

// Two Projections on two databases; one database hangs (its server
// SIGSTOPped): its Projection becomes Degraded DatabaseNotResponding, the
// other keeps reconciling and scales, and once the server resumes the
// first recovers by itself.
func TestHungDatabaseDoesNotHoldUpOthers(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	srv := pgtest.NewServer(t)
	newSecret(t, ns, "hung", map[string]string{"dsn": srv.NewDatabase(t)})
	healthyDSN := pgtest.NewDatabase(t)
	newSecret(t, ns, "healthy", map[string]string{"dsn": healthyDSN})
	// More Projections on the hung database than the operator has
	// reconcile workers: were each reconcile of theirs to wait, none
	// would be left for the healthy one.
	hung := []string{"hung-a", "hung-b", "hung-c", "hung-d", "hung-e"}
	for _, name := range hung {
		projectionOn(t, ns, name, "hung", 1)
	}
	projectionOn(t, ns, "healthy", "healthy", 1)
	healthy := pgtest.OpenPool(t, healthyDSN)
	for _, name := range append(hung, "healthy") {
		eventually(t, 60*time.Second, name+" ready", func() error {
			if got := condition(getProjection(t, ns, name), v1alpha1.ConditionReady); !strings.HasPrefix(got, "True/") {
				return fmt.Errorf("Ready is %q", got)
			}
			return nil
		})
	}

	srv.Freeze(t)
	frozen := time.Now()
	for _, name := range hung {
		eventually(t, 60*time.Second, name+" Degraded DatabaseNotResponding", func() error {
			got := condition(getProjection(t, ns, name), v1alpha1.ConditionDegraded)
			if !strings.HasPrefix(got, "True/"+v1alpha1.ReasonDatabaseNotResponding+": ") {
				return fmt.Errorf("Degraded is %q", got)
			}
			return nil
		})
	}
	reported := time.Since(frozen)

	// The healthy Projection scales while the other database hangs.
	scaleAt := time.Now()
	if out, err := env.Kubectl(ctx, "scale", "projection", "healthy", "-n", ns, "--replicas=3"); err != nil {
		t.Fatalf("kubectl scale: %v\n%s", err, out)
	}
	eventually(t, 60*time.Second, "the healthy Projection scaled to 3", func() error {
		n, _ := topologyOf(t, healthy, "healthy")
		sts, err := getStatefulSet(t, ns, "healthy")
		if err != nil {
			return err
		}
		if p := getProjection(t, ns, "healthy"); n != 3 || *sts.Spec.Replicas != 3 || p.Status.Partitions != 3 {
			return fmt.Errorf("topology %d, StatefulSet %d, status %d partitions", n, *sts.Spec.Replicas, p.Status.Partitions)
		}
		return nil
	})
	scaled := time.Since(scaleAt)

	srv.Thaw(t)
	thawed := time.Now()
	for _, name := range hung {
		eventually(t, 60*time.Second, name+" recovered", func() error {
			p := getProjection(t, ns, name)
			if d, r := condition(p, v1alpha1.ConditionDegraded), condition(p, v1alpha1.ConditionReady); !strings.HasPrefix(d, "False/") || !strings.HasPrefix(r, "True/") {
				return fmt.Errorf("Degraded %q, Ready %q", d, r)
			}
			return nil
		})
	}
	t.Logf("hung database reported on %d Projections after %s; the other scaled in %s meanwhile; recovered %s after the server resumed",
		len(hung), reported.Round(100*time.Millisecond), scaled.Round(100*time.Millisecond), time.Since(thawed).Round(100*time.Millisecond))

	var reasons []string
	for _, e := range listEvents(t, ns) {
		reasons = append(reasons, e.Reason)
	}
	if !strings.Contains(strings.Join(reasons, " "), v1alpha1.ReasonDatabaseNotResponding) {
		t.Errorf("no %s event among %v", v1alpha1.ReasonDatabaseNotResponding, reasons)
	}
}
