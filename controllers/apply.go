// Applying the children (Service, StatefulSet, PodDisruptionBudget) with server-side apply and
// the no-op cache that keeps a status refresh from sending them again.

package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers/resources"
)

func (r *ProjectionReconciler) applyService(ctx context.Context, s *state) error {
	svc := resources.Service(s.projection)
	var observed corev1.Service
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: *svc.Namespace, Name: *svc.Name}, &observed)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading Service: %w", err)
	}
	if err := r.apply(ctx, s, "Service", svc, svc.ObjectMetaApplyConfiguration, observed.ResourceVersion); err != nil {
		return fmt.Errorf("applying Service: %w", err)
	}
	return nil
}

// apply server-side applies obj unless the same desired object was
// applied before and the object has not changed since (the observed
// resourceVersion is the one that apply returned). Every status refresh
// would otherwise send both children again: with 1000 Projections, 200
// no-op requests a second. meta is obj's metadata, which Apply fills in
// from the response.
func (r *ProjectionReconciler) apply(ctx context.Context, s *state, kind string, obj runtime.ApplyConfiguration,
	meta *metav1ac.ObjectMetaApplyConfiguration, observedVersion string) error {
	data, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	key := appliedKey{kind, types.NamespacedName{Namespace: s.projection.Namespace, Name: s.projection.Name}}
	sum := sha256.Sum256(data)
	if v, ok := r.applied.Load(key); ok && observedVersion != "" {
		if last := v.(appliedObject); last.sum == sum && last.resourceVersion == observedVersion {
			return nil
		}
	}
	if err := r.Client.Apply(ctx, obj, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		r.applied.Delete(key)
		return err
	}
	if meta.ResourceVersion != nil {
		r.applied.Store(key, appliedObject{sum: sum, resourceVersion: *meta.ResourceVersion})
	}
	return nil
}

// appliedKey is a child's kind and the Projection's namespace and name.
type appliedKey struct {
	kind       string
	projection types.NamespacedName
}

type appliedObject struct {
	sum             [sha256.Size]byte
	resourceVersion string
}

func (r *ProjectionReconciler) observeStatefulSet(ctx context.Context, s *state) error {
	var sts appsv1.StatefulSet
	key := types.NamespacedName{Namespace: s.projection.Namespace, Name: resources.StatefulSetName(s.projection)}
	err := r.Client.Get(ctx, key, &sts)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("reading StatefulSet: %w", err)
	}
	s.statefulSet = &sts
	return nil
}

// checkSpec builds the StatefulSet once, before anything changes, to find
// what passes the API server's validation but cannot make a pod (a
// volumeMounts entry naming no volume, no image anywhere): the user's to
// fix, so a Degraded condition rather than an error, and neither the
// topology nor the StatefulSet is touched.
func (r *ProjectionReconciler) checkSpec(_ context.Context, s *state) error {
	if _, err := resources.StatefulSet(s.projection, 0, r.Options); err != nil {
		s.invalidSpec = true
		if s.degraded == nil {
			s.degraded = &problem{v1alpha1.ReasonInvalidSpec, err.Error()}
		}
	}
	return nil
}

// applyStatefulSet applies the StatefulSet with spec.replicas pods once the
// topology has been switched, or none while a rebuild stops the workers. While the operator cannot switch it, the
// StatefulSet keeps the pods it has (none for a new Projection).
func (r *ProjectionReconciler) applyStatefulSet(ctx context.Context, s *state) error {
	if s.invalidSpec {
		if s.statefulSet != nil {
			s.replicas = ptr.Deref(s.statefulSet.Spec.Replicas, 1)
		}
		return nil
	}
	s.replicas = s.desired
	if s.degraded != nil {
		s.replicas = 0
		if s.statefulSet != nil {
			s.replicas = ptr.Deref(s.statefulSet.Spec.Replicas, 1)
		}
	}
	if s.rebuild != nil && s.rebuild.stop || s.nameInUse {
		// A rebuild's reset waits until no worker runs; workers of a
		// projection name another Projection owns would run its
		// projection beside its own workers.
		s.replicas = 0
	}
	sts, err := resources.StatefulSet(s.projection, s.replicas, r.Options)
	if err != nil {
		return reconcile.TerminalError(fmt.Errorf("building StatefulSet: %w", err))
	}
	observedVersion := ""
	if s.statefulSet != nil {
		observedVersion = s.statefulSet.ResourceVersion
	}
	if err := r.apply(ctx, s, "StatefulSet", sts, sts.ObjectMetaApplyConfiguration, observedVersion); err != nil {
		return fmt.Errorf("applying StatefulSet: %w", err)
	}
	return nil
}

// applyPodDisruptionBudget keeps the worker pods' PodDisruptionBudget, or
// deletes it when spec.podDisruptionBudget.enabled is false (only one the
// Projection owns).
func (r *ProjectionReconciler) applyPodDisruptionBudget(ctx context.Context, s *state) error {
	if s.invalidSpec {
		return nil
	}
	pdb := resources.PodDisruptionBudget(s.projection)
	var observed policyv1.PodDisruptionBudget
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: *pdb.Namespace, Name: *pdb.Name}, &observed)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading PodDisruptionBudget: %w", err)
	}
	if !resources.PodDisruptionBudgetEnabled(s.projection) {
		r.applied.Delete(appliedKey{"PodDisruptionBudget", types.NamespacedName{Namespace: s.projection.Namespace, Name: s.projection.Name}})
		if err != nil || !metav1.IsControlledBy(&observed, s.projection) {
			return nil
		}
		if err := r.Client.Delete(ctx, &observed, client.Preconditions{UID: &observed.UID}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting PodDisruptionBudget: %w", err)
		}
		return nil
	}
	if err := r.apply(ctx, s, "PodDisruptionBudget", pdb, pdb.ObjectMetaApplyConfiguration, observed.ResourceVersion); err != nil {
		return fmt.Errorf("applying PodDisruptionBudget: %w", err)
	}
	return nil
}
