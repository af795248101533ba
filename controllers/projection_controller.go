// Package controllers holds the ProjectionReconciler, which runs each
// Projection as a StatefulSet of partition workers and switches the
// projection's topology in its database before changing the number of pods.
package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5/pgxpool"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
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

	dbs databases
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
}

type secretData struct {
	resourceVersion string
	data            map[string][]byte
}

// SetupWithManager registers the reconciler: it owns StatefulSets and
// Services, and follows the Secrets Projections name and their pods. Of
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
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.projectionsForSecret)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(projectionForPod),
			builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
				return o.GetLabels()[resources.LabelProjection] != ""
			}))).
		Complete(r)
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
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !p.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // owner references remove the children
	}
	s := &state{projection: &p, desired: ptr.Deref(p.Spec.Replicas, 1), suspended: ptr.Deref(p.Spec.Suspend, false)}
	if s.suspended {
		// No pods, and no topology switch: the partition count in the
		// database stays what it was, for the resume.
		s.desired = 0
	}
	for _, phase := range []func(context.Context, *state) error{
		r.applyService,
		r.observeStatefulSet,
		r.connect,
		r.checkSpec,
		r.switchTopology,
		r.applyStatefulSet,
		r.observeProgress,
		r.observePods,
	} {
		if err := phase(ctx, s); err != nil {
			return ctrl.Result{}, err
		}
	}
	status := r.computeStatus(s)
	before := p.Status.Conditions
	if !equality.Semantic.DeepEqual(p.Status, status) {
		patch := statusPatch{client.MergeFrom(p.DeepCopy())}
		p.Status = status
		if err := r.Client.Status().Patch(ctx, &p, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("writing status: %w", err)
		}
	}
	r.emitEvents(ctx, s, before)
	return ctrl.Result{RequeueAfter: r.StatusInterval}, nil
}

// state is what one reconcile learns, phase by phase.
type state struct {
	projection *v1alpha1.Projection
	// desired is the number of worker pods: spec.replicas, or 0 while
	// suspended.
	desired   int32
	suspended bool

	statefulSet *appsv1.StatefulSet // nil if it does not exist
	pool        poolHandle
	// degraded, when set, is why the operator cannot do what the spec
	// asks (reason, message); later phases that need the database skip.
	degraded *problem
	// switched is set when this reconcile changed the topology.
	switched *switchEvent
	// replicas is what the StatefulSet was given.
	replicas int32
	progress *projection.Progress
	// deadLetters is the dead-letter count read with the progress, and
	// deadLettersBefore the one the status held before this pass.
	deadLetters       *int64
	deadLettersBefore int64
	// workerFailure is the last failure of a worker container, if any.
	workerFailure *problem
	// invalidSpec: the spec cannot make a StatefulSet; nothing is applied.
	invalidSpec bool
}

type problem struct{ reason, message string }

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

// connect reads the Secret and opens the database. Failures are the
// user's to fix and become the Degraded condition, not an error.
func (r *ProjectionReconciler) connect(ctx context.Context, s *state) error {
	ref := s.projection.Spec.Database.SecretRef
	key := ref.Key
	if key == "" {
		key = "dsn"
	}
	data, err := r.secretData(ctx, types.NamespacedName{Namespace: s.projection.Namespace, Name: ref.Name})
	switch {
	case apierrors.IsNotFound(err):
		s.degraded = &problem{v1alpha1.ReasonSecretNotFound,
			fmt.Sprintf("Secret %q not found in namespace %q; create it with the database connection string under key %q", ref.Name, s.projection.Namespace, key)}
		return nil
	case err != nil:
		return fmt.Errorf("reading Secret %q: %w", ref.Name, err)
	}
	dsn, ok := data[key]
	if !ok || len(dsn) == 0 {
		s.degraded = &problem{v1alpha1.ReasonSecretKeyNotFound,
			fmt.Sprintf("Secret %q has no key %q (or it is empty); put the database connection string there", ref.Name, key)}
		return nil
	}
	s.pool.dsn = string(dsn) // for redacting what the workers report
	local, files, prob, err := r.mountedTLSFiles(ctx, s.projection, string(dsn))
	if err != nil {
		return err
	}
	if prob != nil {
		s.degraded = prob
		return nil
	}
	db, err := r.dbs.get(ctx, local, files)
	if err != nil {
		s.degraded = &problem{reasonOf(err), "database of Secret " + ref.Name + ": " + redactErr(err, string(dsn))}
		return nil
	}
	s.pool = poolHandle{pool: db.pool, dsn: string(dsn), db: db}
	return nil
}

// secretData returns a Secret's data: from memory while the cached
// metadata shows the resourceVersion it was read at, else read from the
// API server.
func (r *ProjectionReconciler) secretData(ctx context.Context, key types.NamespacedName) (map[string][]byte, error) {
	var m metav1.PartialObjectMetadata
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := r.Client.Get(ctx, key, &m); err != nil {
		if apierrors.IsNotFound(err) {
			r.secrets.Delete(key)
		}
		return nil, err
	}
	if v, ok := r.secrets.Load(key); ok && v.(secretData).resourceVersion == m.ResourceVersion {
		return v.(secretData).data, nil
	}
	var secret corev1.Secret
	if err := r.APIReader.Get(ctx, key, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			r.secrets.Delete(key)
		}
		return nil, err
	}
	r.secrets.Store(key, secretData{resourceVersion: secret.ResourceVersion, data: secret.Data})
	return secret.Data, nil
}

// switchTopology sets the projection's partition count in the database to
// spec.replicas before any pod is added or removed, so that running
// workers move to the new generation on their next batch. Replicas 0
// pauses the projection: the topology is left as it is.
func (r *ProjectionReconciler) switchTopology(ctx context.Context, s *state) error {
	if s.degraded != nil || s.desired == 0 {
		return nil
	}
	name := s.projection.EffectiveProjectionName()
	// SetTopologyAs is idempotent and reports the count it found, so
	// there is no read before it; as the operator it also claims the
	// topology, so that no standalone processor changes it behind us.
	var c projection.TopologyChange
	err := r.dbs.do(ctx, s.pool.db, "switching the topology", topologyTimeout, func(ctx context.Context) (err error) {
		c, err = projection.SetTopologyAs(ctx, s.pool.pool, name, int(s.desired),
			projection.TopologyOptions{ManagedBy: projection.ManagerOperator, Logger: slog.New(logr.ToSlogHandler(log.FromContext(ctx)))})
		return err
	})
	if err != nil {
		s.degraded = &problem{reasonOf(err),
			fmt.Sprintf("switching projection %s to %d partitions: %s", name, s.desired, redactErr(err, s.pool.dsn))}
		return nil
	}
	if c.Before.TotalPartitions != c.After.TotalPartitions {
		s.switched = &switchEvent{from: c.Before.TotalPartitions, to: c.After.TotalPartitions, generation: c.After.Generation}
	}
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
// topology has been switched. While the operator cannot switch it, the
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

// observeProgress reads checkpoints, head and lag for status.
func (r *ProjectionReconciler) observeProgress(ctx context.Context, s *state) error {
	if s.pool.pool == nil {
		return nil
	}
	var progress projection.Progress
	var deadLetters int64
	err := r.dbs.do(ctx, s.pool.db, "reading progress", databaseTimeout, func(ctx context.Context) (err error) {
		progress, err = projection.GetProgress(ctx, s.pool.pool, s.projection.EffectiveProjectionName())
		if err != nil {
			return err
		}
		deadLetters, err = projection.CountDeadLetters(ctx, s.pool.pool, s.projection.EffectiveProjectionName())
		return err
	})
	if err != nil {
		if s.degraded == nil {
			s.degraded = &problem{reasonOf(err), redactErr(err, s.pool.dsn)}
		}
		return nil
	}
	s.progress = &progress
	s.deadLetters, s.deadLettersBefore = &deadLetters, s.projection.Status.DeadLetters
	return nil
}

// observePods finds the last failure of a worker container, which the
// worker writes (through FallbackToLogsOnError) as its last log line: an
// unknown projection name, a poison event under the Stop policy.
func (r *ProjectionReconciler) observePods(ctx context.Context, s *state) error {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(s.projection.Namespace),
		client.MatchingLabels(resources.SelectorLabels(s.projection))); err != nil {
		return fmt.Errorf("listing worker pods: %w", err)
	}
	for _, pod := range pods.Items {
		for _, cs := range pod.Status.ContainerStatuses {
			t := cs.LastTerminationState.Terminated
			if t == nil {
				t = cs.State.Terminated
			}
			if t == nil || t.ExitCode == 0 || (cs.Ready && cs.State.Running != nil && cs.RestartCount == 0) {
				continue
			}
			if cs.State.Running != nil && cs.Ready {
				continue // recovered since
			}
			msg := t.Message
			if len(msg) > 512 {
				msg = msg[len(msg)-512:]
			}
			if s.pool.dsn != "" {
				msg = redact(msg, s.pool.dsn)
			}
			s.workerFailure = &problem{v1alpha1.ReasonWorkerFailing,
				fmt.Sprintf("pod %s exited with code %d (restarts: %d): %s", pod.Name, t.ExitCode, cs.RestartCount, msg)}
			return nil
		}
	}
	return nil
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

func reasonOf(err error) string {
	var dbErr *databaseError
	if errors.As(err, &dbErr) {
		return dbErr.condition
	}
	return v1alpha1.ReasonDatabaseUnreachable
}

// closer closes the database pools when the manager stops.
type closer struct{ dbs *databases }

func (c closer) Start(ctx context.Context) error {
	<-ctx.Done()
	c.dbs.close()
	return nil
}

// statusPatch is a JSON merge patch of the status that always carries
// replicas and readyReplicas, and partitions and lag once the operator has
// read them from the database (the projection has a topology). A plain
// merge patch from the typed object leaves out fields that did not change
// in Go — and a zero that the server has never stored is "unchanged" in
// Go — so a new Projection's LAG column stayed empty until its lag first
// moved off 0. Before the first reading they stay unset: a Projection
// whose database is unreachable shows no lag rather than a lag of 0.
type statusPatch struct{ client.Patch }

func (p statusPatch) Data(obj client.Object) ([]byte, error) {
	data, err := p.Patch.Data(obj)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	st, _ := m["status"].(map[string]any)
	if st == nil {
		st = map[string]any{}
		m["status"] = st
	}
	s := obj.(*v1alpha1.Projection).Status
	st["replicas"], st["readyReplicas"] = s.Replicas, s.ReadyReplicas
	if s.TopologyGeneration > 0 {
		st["partitions"], st["lag"] = s.Partitions, s.Lag
	}
	return json.Marshal(m)
}
