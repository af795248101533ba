package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers"
	"github.com/projectionist/projectionist/internal/kubetest"
	"github.com/projectionist/projectionist/internal/proctest"
)

// failoverBound is how long the surviving replica may take to reconcile
// after the leader is killed: the Lease's duration (15 s, as the operator
// sets it: controller-runtime's default), a retry period (2 s) and the
// reconcile, with room for a loaded machine. The measured time is logged.
const failoverBound = 45 * time.Second

// Two operator replicas with --leader-elect: one holds the Lease and
// reconciles, the other waits. The leader is killed with SIGKILL (it
// cannot release the Lease), and the other takes the Lease over once it
// expires and reconciles a Projection created after the kill.
func TestOperatorLeaderFailover(t *testing.T) {
	ctx := t.Context()
	env := kubetest.New(t, kubetest.Options{})
	c, err := client.New(env.Config, client.Options{Scheme: controllers.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	replicas := map[string]*process{}
	for _, name := range []string{"operator-a", "operator-b"} {
		port, err := proctest.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		replicas[name] = startProcess(t, name, nil, "operator", "--kubeconfig", env.Kubeconfig, "--leader-elect",
			"--leader-election-namespace", "default", "--metrics-addr", "0", "--health-probe-addr", fmt.Sprintf("127.0.0.1:%d", port),
			"--worker-image", "example.invalid/worker:1")
	}
	leader := func() (string, error) {
		var names []string
		for name, p := range replicas {
			if p.running() && strings.Contains(p.out.String(), "Successfully acquired lease") {
				names = append(names, name)
			}
		}
		if len(names) != 1 {
			return "", fmt.Errorf("%d running replicas say they acquired the lease: %v", len(names), names)
		}
		return names[0], nil
	}
	reconciled := func(name string) func() error {
		return func() error {
			p := &v1alpha1.Projection{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, p); err != nil {
				return err
			}
			if p.Status.ObservedGeneration != p.Generation {
				return fmt.Errorf("projection %s: status observed generation %d of %d", name, p.Status.ObservedGeneration, p.Generation)
			}
			return nil
		}
	}
	create := func(name string) {
		t.Helper()
		p := &v1alpha1.Projection{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: v1alpha1.ProjectionSpec{Replicas: ptr.To[int32](1), Database: v1alpha1.DatabaseSpec{SecretRef: v1alpha1.SecretKeySelector{Name: "db"}}}}
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}

	create("before")
	proctest.Eventually(t, time.Minute, 100*time.Millisecond, "the leader to reconcile", reconciled("before"))
	first, err := leader()
	if err != nil {
		t.Fatal(err)
	}
	lease := &coordinationv1.Lease{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "projectionist-operator.projectionist.dev"}, lease); err != nil {
		t.Fatal(err)
	}
	holder := ptr.Deref(lease.Spec.HolderIdentity, "")

	replicas[first].signal(t, syscall.SIGKILL)
	killed := time.Now()
	<-replicas[first].done
	create("after")
	proctest.Eventually(t, failoverBound, 100*time.Millisecond, "the other replica to take over and reconcile", reconciled("after"))
	took := time.Since(killed)
	second, err := leader()
	if err != nil || second == first {
		t.Fatalf("after the kill: leader %q (%v), want the replica other than %s", second, err, first)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(lease), lease); err != nil {
		t.Fatal(err)
	}
	if now := ptr.Deref(lease.Spec.HolderIdentity, ""); now == holder || now == "" {
		t.Errorf("the Lease is held by %q after the kill, before by %q: want another holder", now, holder)
	}
	// The survivor reconciles what the dead leader left too.
	p := &v1alpha1.Projection{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "before"}, p); err != nil {
		t.Fatal(err)
	}
	if d := findCondition(p.Status.Conditions, v1alpha1.ConditionDegraded); d == nil || d.Status != metav1.ConditionTrue {
		t.Errorf("projection before: Degraded %+v, want True (its Secret is missing)", d)
	}
	t.Logf("%s killed (SIGKILL): %s took over and reconciled a new Projection %s later", first, second, took.Round(100*time.Millisecond))
}

func findCondition(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}
