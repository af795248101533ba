// Package controllers holds the ProjectionReconciler, which runs each
// Projection as a StatefulSet of partition workers and switches the
// projection's topology in its database before changing the number of pods.
//
// Reconcile (this file) runs the phases in order; each concern has its file:
// watches.go (what is watched and mapped to Projections), apply.go (the
// children: Service, StatefulSet, PodDisruptionBudget, server-side applied
// behind a no-op cache), secrets.go and
// database.go (the Secret, the connection pools and their timeouts),
// autoscale.go (spec.autoscaling: the count from lag and throughput),
// topology.go (the switch in the database), partition_index.go (the
// partition index of a large count), rebuild.go (spec.rebuildToken:
// stop, reset, replay), observe.go (progress and worker
// failures read back), projection_status.go (the status and its
// conditions) and events.go (the Events and log lines of a change).
package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers/resources"
	"github.com/projectionist/projectionist/pkg/projection"
)

// FieldOwner is the field manager of everything the operator applies.
const FieldOwner = resources.FieldOwner

// secretNameField indexes Projections by the Secret they read.
const secretNameField = ".spec.database.secretRef.name"

// DefaultStatusInterval is how often a Projection's status is refreshed
// from its database when nothing else happens.
const DefaultStatusInterval = 10 * time.Second

// ProjectionReconciler runs Projections. Create it with its exported
// fields set and call SetupWithManager.
type ProjectionReconciler struct {
	Client client.Client
	// APIReader reads Secrets from the API server (the manager's
	// GetAPIReader); the operator caches only their metadata. Defaults to
	// Client.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	// Options are the builders' operator-wide settings (the worker image).
	Options resources.Options
	// StatusInterval is how often status is refreshed from the database.
	// Defaults to DefaultStatusInterval.
	StatusInterval time.Duration
	// PartitionIndexMinPartitions is the smallest partition count for
	// which the operator builds a partition index (partition_index.go); 0
	// builds none and drops none.
	PartitionIndexMinPartitions int
	// PartitionIndexRetention is how long a partition index no projection
	// in its database uses is kept. Defaults to
	// DefaultPartitionIndexRetention.
	PartitionIndexRetention time.Duration
	// ReleaseTimeout is how long a deleted Projection's finalizer retries
	// releasing the projection name while its database cannot be used.
	// Defaults to DefaultReleaseTimeout.
	ReleaseTimeout time.Duration
	// SlowReadGrace is how long a Projection's database reads may keep
	// running out of time, while the database answers a ping, before it
	// is Degraded (DatabaseSlow). Defaults to DefaultSlowReadGrace.
	SlowReadGrace time.Duration
	// Clock tells the time of the autoscaler's windows and of slow reads.
	// Defaults to clock.RealClock{}.
	Clock clock.PassiveClock

	dbs databases
	// memories is what the reconciler remembers of each Projection
	// between passes: its CaughtUp, its autoscaler, its slow reads
	// (memory.go).
	memories memories
	// reported is what emitEvents last reported per Projection
	// (types.NamespacedName -> reported): the cache may not show the
	// previous reconcile's status write yet, and comparing against it
	// alone would report one change twice.
	reported sync.Map
	// applied is what apply last sent per child (appliedKey ->
	// appliedObject).
	applied sync.Map
	// secrets holds the data of the Secrets Projections read, by
	// namespace/name (types.NamespacedName -> secretData), as of a
	// resourceVersion.
	secrets sync.Map
	// indexes runs the partition index builds and drops.
	indexes partitionIndexes
}

// Reconcile brings one Projection's children, topology and status to
// where its spec says.
func (r *ProjectionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var p v1alpha1.Projection
	if err := r.Client.Get(ctx, req.NamespacedName, &p); err != nil {
		if apierrors.IsNotFound(err) {
			r.reported.Delete(req.NamespacedName)
			r.applied.Delete(appliedKey{"StatefulSet", req.NamespacedName})
			r.applied.Delete(appliedKey{"Service", req.NamespacedName})
			r.applied.Delete(appliedKey{"PodDisruptionBudget", req.NamespacedName})
			r.memories.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !p.DeletionTimestamp.IsZero() {
		// The projection name is released (owner.go); owner references
		// remove the children.
		return r.finalize(ctx, &p)
	}
	if err := r.ensureFinalizer(ctx, &p); err != nil {
		return ctrl.Result{}, err
	}
	s := &state{projection: &p, desired: p.SpecReplicas(), suspended: p.Suspended()}
	if s.suspended {
		// No pods, and no topology switch: the partition count in the
		// database stays what it was, for the resume.
		s.desired = 0
	}
	for _, phase := range []func(context.Context, *state) error{
		r.applyService,
		r.observeStatefulSet,
		r.connect,
		r.claimProjectionName,
		r.checkSpec,
		r.autoscale,
		r.switchTopology,
		r.ensurePartitionIndex,
		r.rebuild,
		r.runDeadLetterAction,
		r.applyStatefulSet,
		r.applyPodDisruptionBudget,
		r.observeProgress,
		r.observePods,
		r.weighSlowReads,
	} {
		if err := phase(ctx, s); err != nil {
			return ctrl.Result{}, err
		}
	}
	status := r.computeStatus(s)
	before := p.Status.Conditions
	if !equality.Semantic.DeepEqual(p.Status, status) {
		var opts []client.MergeFromOption
		if s.rebuild != nil && s.rebuild.changed() {
			// A rebuild's step is written only over the status it was
			// computed from: a pass that read an older one (the cache
			// lags) must not move the rebuild back, or report a step twice.
			opts = append(opts, client.MergeFromWithOptimisticLock{})
		}
		patch := statusPatch{client.MergeFromWithOptions(p.DeepCopy(), opts...)}
		p.Status = status
		if err := r.Client.Status().Patch(ctx, &p, patch); apierrors.IsConflict(err) {
			// The newer status is on its way to the cache, and its
			// update event brings the next reconcile.
			return ctrl.Result{RequeueAfter: r.StatusInterval}, nil
		} else if err != nil {
			return ctrl.Result{}, fmt.Errorf("writing status: %w", err)
		}
	}
	r.emitEvents(ctx, s, before)
	return ctrl.Result{RequeueAfter: r.StatusInterval}, nil
}

// state is what one reconcile learns, phase by phase.
type state struct {
	projection *v1alpha1.Projection
	// desired is the number of worker pods: spec.replicas (or the
	// autoscaler's count), or 0 while suspended.
	desired   int32
	suspended bool

	statefulSet *appsv1.StatefulSet // nil if it does not exist
	pool        poolHandle
	// degraded, when set, is why the operator cannot do what the spec
	// asks (reason, message); later phases that need the database skip.
	degraded *problem
	// nameInUse: another Projection owns the projection name in the
	// database (degraded says which); this one runs no pods.
	nameInUse bool
	// slowRead, when set, is the first read of this pass that ran out of
	// time while the database answered a ping (DatabaseSlow); later
	// phases that only read skip, and weighSlowReads decides whether it
	// is a problem yet.
	slowRead *problem
	// switched is set when this reconcile changed the topology.
	switched *switchEvent
	// replicas is what the StatefulSet was given.
	replicas int32
	progress *projection.Progress
	// deadLetters is the dead-letter count read with the progress, and
	// deadLettersBefore the one the status held before this pass.
	deadLetters       *int64
	deadLettersBefore int64
	// deadLetterSamples are the oldest dead letters, read with the count.
	deadLetterSamples []v1alpha1.DeadLetterSample
	// deadLetterAction is the outcome of the spec.deadLetterAction this
	// pass ran, if it ran one.
	deadLetterAction *v1alpha1.DeadLetterActionStatus
	// workerFailure is the last failure of a worker container, if any.
	workerFailure *problem
	// invalidSpec: the spec cannot make a StatefulSet; nothing is applied.
	invalidSpec bool
	// rebuild is the rebuild under way (spec.rebuildToken), if any.
	rebuild *rebuildState
	// autoscaling is the autoscaler's status (spec.autoscaling), and
	// autoscaled the change of count it made in this pass, if any.
	autoscaling *v1alpha1.AutoscalingStatus
	autoscaled  *autoscaleEvent
	// partitionIndex is where the partition index for the count stands.
	partitionIndex *v1alpha1.PartitionIndexStatus
}

// stopped reports whether the spec asks for no worker pods: paused
// (spec.replicas 0) or suspended. Either way the topology in the database
// stays what it was, for the resume.
func (s *state) stopped() bool { return s.suspended || s.projection.Paused() }

type problem struct{ reason, message string }

// noteFailure records a failed database read: as the pass's slow read if
// it ran out of time while the database answers a ping, else as its
// Degraded problem; the first of each counts.
func (s *state) noteFailure(err error) {
	p := &problem{reasonOf(err), redactErr(err, s.pool.dsn)}
	switch {
	case slow(err):
		if s.slowRead == nil {
			s.slowRead = p
		}
	case s.degraded == nil:
		s.degraded = p
	}
}

type switchEvent struct {
	from, to   int
	generation int64
}

// poolHandle is the projection's database pool and the DSN it came from
// (for redacting errors).
type poolHandle struct {
	pool *pgxpool.Pool
	dsn  string
	db   *database
}

// clock is r.Clock, or the real clock.
func (r *ProjectionReconciler) clock() clock.PassiveClock {
	if r.Clock == nil {
		return clock.RealClock{}
	}
	return r.Clock
}
