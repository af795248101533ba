package controllers_test

import (
	"fmt"
	"testing"
	"time"

	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers/resources"
	"github.com/projectionist/projectionist/internal/pgtest"
)

// Every Projection gets a PodDisruptionBudget for its worker pods,
// maxUnavailable 1 unless spec.podDisruptionBudget says otherwise; turning
// it off deletes it, turning it on again brings it back. The API server
// refuses a maxUnavailable that is neither a count nor a percentage.
func TestPodDisruptionBudgetFollowsSpec(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	newSecret(t, ns, "db", map[string]string{"dsn": pgtest.NewDatabase(t)})
	p := newProjection(t, ns, "orders", "user_count", 3)

	pdbIs := func(what string, want *intstr.IntOrString) {
		t.Helper()
		eventually(t, 30*time.Second, what, func() error {
			var pdb policyv1.PodDisruptionBudget
			err := k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "orders"}, &pdb)
			switch {
			case want == nil && apierrors.IsNotFound(err):
				return nil
			case want == nil && err == nil:
				return fmt.Errorf("PodDisruptionBudget still there")
			case err != nil:
				return err
			case !metav1.IsControlledBy(&pdb, p):
				return fmt.Errorf("owner references %v, want the Projection", pdb.OwnerReferences)
			case pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != *want:
				return fmt.Errorf("maxUnavailable %v, want %v", pdb.Spec.MaxUnavailable, want)
			case pdb.Spec.Selector == nil || pdb.Spec.Selector.MatchLabels[resources.LabelProjection] != "orders":
				return fmt.Errorf("selector %v does not select the worker pods", pdb.Spec.Selector)
			}
			return nil
		})
	}
	setPDB := func(b *v1alpha1.PodDisruptionBudgetSpec) error {
		return updateSpec(t, ns, "orders", func(s *v1alpha1.ProjectionSpec) { s.PodDisruptionBudget = b })
	}

	pdbIs("a PodDisruptionBudget of maxUnavailable 1", ptr.To(intstr.FromInt32(1)))
	if err := setPDB(&v1alpha1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromString("50%"))}); err != nil {
		t.Fatal(err)
	}
	pdbIs("maxUnavailable 50%", ptr.To(intstr.FromString("50%")))
	if err := setPDB(&v1alpha1.PodDisruptionBudgetSpec{Enabled: ptr.To(false)}); err != nil {
		t.Fatal(err)
	}
	pdbIs("the PodDisruptionBudget deleted", nil)
	if err := setPDB(nil); err != nil {
		t.Fatal(err)
	}
	pdbIs("the PodDisruptionBudget back", ptr.To(intstr.FromInt32(1)))

	for _, bad := range []intstr.IntOrString{intstr.FromString("half"), intstr.FromInt32(-1), intstr.FromString("50")} {
		if err := setPDB(&v1alpha1.PodDisruptionBudgetSpec{MaxUnavailable: &bad}); !apierrors.IsInvalid(err) {
			t.Errorf("maxUnavailable %v: %v, want Invalid", bad.String(), err)
		}
	}
}
