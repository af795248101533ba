package controllers_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/internal/kubetest"
	"github.com/projectionist/projectionist/internal/pgtest"
)

// At steady state the status refresh (every second in these tests) sends
// no apply requests for the children; a change to a child made by someone
// else is still undone.
func TestSteadyStateSendsNoApplies(t *testing.T) {
	ns := newNamespace(t)
	newSecret(t, ns, "db", map[string]string{"dsn": pgtest.NewDatabase(t)})
	newProjection(t, ns, "steady", "user_count", 1)
	eventually(t, 60*time.Second, "Ready", func() error {
		if got := condition(getProjection(t, ns, "steady"), v1alpha1.ConditionReady); !strings.HasPrefix(got, "True/") {
			return fmt.Errorf("Ready is %q", got)
		}
		return nil
	})

	before := applyRequests(t)
	time.Sleep(4 * time.Second) // four status refreshes
	after := applyRequests(t)
	if before != after {
		t.Errorf("the API server counted %v apply requests for StatefulSets and Services over 4 s of steady state, want 0", after-before)
	}

	// Someone scales the StatefulSet behind the operator's back.
	sts, err := getStatefulSet(t, ns, "steady")
	if err != nil {
		t.Fatal(err)
	}
	sts.Spec.Replicas = ptr.To(int32(3))
	if err := k8sClient.Update(t.Context(), sts, client.FieldOwner("someone-else")); err != nil {
		t.Fatal(err)
	}
	statefulSetReplicasAre(t, ns, "steady", 1)
}

// applyRequests is the API server's count of apply requests for
// StatefulSets and Services so far.
func applyRequests(t *testing.T) float64 {
	t.Helper()
	counts, err := kubetest.RequestCounts(t.Context(), env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return counts["APPLY statefulsets"] + counts["APPLY services"]
}
