// What the reconciler watches, and how a change maps to the Projections to
// reconcile.

package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers/resources"
)

// SetupWithManager registers the reconciler: it owns StatefulSets,
// Services and PodDisruptionBudgets, and follows the Secrets Projections name and their pods. Of
// Secrets it watches only metadata: caching every Secret's data in the
// cluster (Helm's release Secrets among them) would grow the operator with
// the cluster; it reads a Secret it needs when its resourceVersion changes.
func (r *ProjectionReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.StatusInterval <= 0 {
		r.StatusInterval = DefaultStatusInterval
	}
	if r.APIReader == nil {
		r.APIReader = r.Client
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.Projection{}, secretNameField,
		func(o client.Object) []string {
			return []string{o.(*v1alpha1.Projection).Spec.Database.SecretRef.Name}
		}); err != nil {
		return fmt.Errorf("indexing Projections by Secret: %w", err)
	}
	if err := mgr.Add(closer{&r.dbs}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Projection{}).
		Owns(&appsv1.StatefulSet{}).
		Owns(&corev1.Service{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.projectionsForSecret)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(projectionForPod),
			builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
				return o.GetLabels()[resources.LabelProjection] != ""
			}))).
		Complete(r)
}

// projectionsForSecret maps a Secret to the Projections that read it.
func (r *ProjectionReconciler) projectionsForSecret(ctx context.Context, o client.Object) []ctrl.Request {
	var list v1alpha1.ProjectionList
	if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{secretNameField: o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "listing Projections of a Secret", "secret", o.GetName())
		return nil
	}
	reqs := make([]ctrl.Request, 0, len(list.Items))
	for _, p := range list.Items {
		reqs = append(reqs, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}})
	}
	return reqs
}

// projectionForPod maps a worker pod to its Projection.
func projectionForPod(_ context.Context, o client.Object) []ctrl.Request {
	name := o.GetLabels()[resources.LabelProjection]
	if name == "" {
		return nil
	}
	return []ctrl.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}
