// One Projection per projection name and database: the check before
// anything is changed in the database, and the finalizer that releases
// the name when the Projection is deleted.

package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/pkg/projection"
)

// DefaultReleaseTimeout bounds how long a deleted Projection waits for
// its database to release the projection name: after it, the finalizer is
// removed anyway (a Warning Event says what is left and how to release it
// by hand), so that a database gone for good does not keep the
// Projection, and its namespace, from being deleted.
const DefaultReleaseTimeout = 5 * time.Minute

// ownerOf is how a Projection is recorded as the owner of its projection
// name (projection.TopologyOptions.Owner): readable in messages, and
// unique, because of the UID, to this Projection and not to one recreated
// under its name.
func ownerOf(p *v1alpha1.Projection) string {
	return fmt.Sprintf("Projection %s/%s (uid %s)", p.Namespace, p.Name, p.UID)
}

// ensureFinalizer adds the finalizer that releases the projection name,
// also to Projections created before it existed.
func (r *ProjectionReconciler) ensureFinalizer(ctx context.Context, p *v1alpha1.Projection) error {
	if controllerutil.ContainsFinalizer(p, v1alpha1.Finalizer) {
		return nil
	}
	// The optimistic lock keeps the patch, which replaces the list, from
	// dropping a finalizer someone else added meanwhile.
	patch := client.MergeFromWithOptions(p.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.AddFinalizer(p, v1alpha1.Finalizer)
	if err := r.Client.Patch(ctx, p, patch); err != nil {
		return fmt.Errorf("adding finalizer: %w", err)
	}
	return nil
}

// claimProjectionName runs before any phase that reads or writes the
// projection's rows: it makes this Projection the owner of its projection
// name in the database, if the name has no owner, and otherwise, when
// another Projection owns it, makes this one Degraded with reason
// ProjectionNameInUse, so that it changes nothing there and runs no pods.
// A projection with no topology yet is claimed by the topology switch,
// which creates it (two Projections creating it at once: the second finds
// the first's owner).
func (r *ProjectionReconciler) claimProjectionName(ctx context.Context, s *state) error {
	if s.degraded != nil || s.pool.pool == nil {
		return nil
	}
	var owned *projection.TopologyOwnedError
	err := r.dbs.do(ctx, s.pool.db, "claiming the projection name", topologyTimeout, func(ctx context.Context) error {
		_, err := projection.ClaimTopology(ctx, s.pool.pool, s.projection.EffectiveProjectionName(), ownerOf(s.projection))
		if errors.Is(err, projection.ErrNoTopology) || errors.As(err, &owned) {
			return nil
		}
		return err
	})
	switch {
	case owned != nil:
		s.notOwner(owned)
	case err != nil:
		s.degraded = &problem{reasonOf(err), redactErr(err, s.pool.dsn)}
	}
	return nil
}

// notOwner makes s Degraded with reason ProjectionNameInUse, naming the
// owner.
func (s *state) notOwner(e *projection.TopologyOwnedError) {
	s.nameInUse = true
	s.degraded = &problem{v1alpha1.ReasonProjectionNameInUse, fmt.Sprintf(
		"projectionName %s in this database belongs to %s: this Projection changes nothing there and runs no worker pods "+
			"until that one is deleted; give this one another spec.projectionName, or delete one of the two",
		e.Projection, e.Owner)}
}

// finalize releases a deleted Projection's projection name in its
// database (with spec.deletionPolicy Forget, deletes the projection's rows
// instead) and then removes the finalizer. A Projection that does not own
// the name releases nothing. While the Secret or the database cannot be
// used it retries, every status interval, for ReleaseTimeout from the
// deletion; a Secret that is gone cannot come back by itself, so its
// absence does not wait.
func (r *ProjectionReconciler) finalize(ctx context.Context, p *v1alpha1.Projection) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(p, v1alpha1.Finalizer) {
		return ctrl.Result{}, nil
	}
	s := &state{projection: p}
	if err := r.connect(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	name, policy := p.EffectiveProjectionName(), p.Spec.DeletionPolicy
	var release projection.TopologyRelease
	if s.degraded == nil {
		err := r.dbs.do(ctx, s.pool.db, "releasing the projection name", topologyTimeout, func(ctx context.Context) (err error) {
			release, err = projection.ReleaseTopology(ctx, s.pool.pool, name, ownerOf(p),
				projection.ReleaseOptions{Forget: policy == v1alpha1.DeletionForget})
			return err
		})
		if err != nil {
			s.degraded = &problem{reasonOf(err), redactErr(err, s.pool.dsn)}
		}
	}
	if prob := s.degraded; prob != nil {
		releaseTimeout := r.ReleaseTimeout
		if releaseTimeout <= 0 {
			releaseTimeout = DefaultReleaseTimeout
		}
		waited := time.Since(p.DeletionTimestamp.Time)
		if prob.reason != v1alpha1.ReasonSecretNotFound && waited < releaseTimeout {
			r.event(ctx, p, corev1.EventTypeWarning, "ReleasePending", "Delete",
				"cannot release projectionName %s yet (%s: %s); retrying until %s after the deletion",
				name, prob.reason, prob.message, releaseTimeout)
			return ctrl.Result{RequeueAfter: min(r.StatusInterval, releaseTimeout-waited)}, nil
		}
		r.event(ctx, p, corev1.EventTypeWarning, "ReleaseAbandoned", "Delete",
			"deleted without releasing projectionName %s in its database (%s: %s): a Projection naming it there is "+
				"ProjectionNameInUse until the name is released by hand (docs/operations.md, \"ProjectionNameInUse\")",
			name, prob.reason, prob.message)
	} else if release.Released {
		if f := release.Forgotten; policy == v1alpha1.DeletionForget {
			r.event(ctx, p, corev1.EventTypeNormal, "Released", "Delete",
				"forgot projection %s (deletionPolicy Forget): deleted %d checkpoints, %d frontier rows, %d dead letters, %d topology rows, %d reset requests",
				name, f.Checkpoints, f.Frontier, f.DeadLetters, f.Topology, f.Resets)
		} else {
			r.event(ctx, p, corev1.EventTypeNormal, "Released", "Delete",
				"released projectionName %s in its database, keeping its topology and checkpoints (deletionPolicy Retain)", name)
		}
	}
	patch := client.MergeFromWithOptions(p.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(p, v1alpha1.Finalizer)
	if err := r.Client.Patch(ctx, p, patch); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("removing finalizer: %w", err)
	}
	return ctrl.Result{}, nil
}
