package controllers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers/resources"
	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// topologyOf reads the projection's partition count and generation from
// the database (0, 0 if it has none, or the schema is not there yet).
func topologyOf(t *testing.T, pool *pgxpool.Pool, name string) (int, int64) {
	t.Helper()
	top, err := projection.GetTopology(t.Context(), pool, name)
	var pgErr *pgconn.PgError
	if errors.Is(err, projection.ErrNoTopology) || errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		return 0, 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return top.TotalPartitions, top.Generation
}

// eventsIn lists the Events in namespace ns and returns, sorted, the text
// describe makes of each Event it keeps.
func eventsIn(ctx context.Context, ns string, describe func(corev1.Event) (string, bool)) ([]string, error) {
	var events corev1.EventList
	if err := k8sClient.List(ctx, &events, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	var got []string
	for _, e := range events.Items {
		if text, keep := describe(e); keep {
			got = append(got, text)
		}
	}
	slices.Sort(got)
	return got, nil
}

// wantTopology reports an error when the topology of projection name in
// pool does not have partitions partitions at generation generation.
func wantTopology(t *testing.T, pool *pgxpool.Pool, name string, partitions int, generation int64, when string) {
	t.Helper()
	if n, gen := topologyOf(t, pool, name); n != partitions || gen != generation {
		t.Errorf("%s: topology has %d partitions, generation %d; want %d, %d", when, n, gen, partitions, generation)
	}
}

// A Projection gets its Service and StatefulSet, its topology in the
// database, and pods that the kwok node runs and reports Ready; status
// and the Ready condition follow.
func TestProjectionComesUpReady(t *testing.T) {
	ns := newNamespace(t)
	db := newDatabase(t, ns)
	newProjection(t, ns, "user-count", "user_count", 2)

	statefulSetReplicasAre(t, ns, "user-count", 2)
	var svc corev1.Service
	if err := k8sClient.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "user-count-workers"}, &svc); err != nil {
		t.Fatalf("headless Service: %v", err)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service clusterIP %q, want None", svc.Spec.ClusterIP)
	}
	eventually(t, 60*time.Second, "2 ready replicas and Ready=True", func() error {
		p := getProjection(t, ns, "user-count")
		if p.Status.ReadyReplicas != 2 || p.Status.Replicas != 2 || !strings.HasPrefix(condition(p, v1alpha1.ConditionReady), "True/") {
			return fmt.Errorf("status %d/%d ready, Ready %q, Degraded %q", p.Status.ReadyReplicas, p.Status.Replicas,
				condition(p, v1alpha1.ConditionReady), condition(p, v1alpha1.ConditionDegraded))
		}
		return nil
	})
	p := getProjection(t, ns, "user-count")
	if p.Status.Partitions != 2 || p.Status.TopologyGeneration != 1 || p.Status.ObservedGeneration != p.Generation {
		t.Errorf("status partitions %d topology generation %d observedGeneration %d, want 2, 1, %d",
			p.Status.Partitions, p.Status.TopologyGeneration, p.Status.ObservedGeneration, p.Generation)
	}
	if p.Status.Selector != resources.Selector(p) || p.Status.Selector == "" {
		t.Errorf("status.selector %q, want %q", p.Status.Selector, resources.Selector(p))
	}
	// The counters are stored even while they are 0: the LAG column reads
	// 0, not blank, for a Projection that has nothing to do.
	out, err := env.Kubectl(t.Context(), "get", "projection", "user-count", "-n", ns, "-o",
		"jsonpath={.status.lag}/{.status.partitions}/{.status.readyReplicas}/{.status.replicas}")
	if err != nil || out != "0/2/2/2" {
		t.Errorf("status lag/partitions/readyReplicas/replicas as stored: %q (%v), want 0/2/2/2", out, err)
	}
	wantTopology(t, db, "user_count", 2, 1, "database topology")
}

// kubectl scale (the real kubectl, through the scale subresource) switches
// the topology in the database before the StatefulSet's replicas change,
// and never touches the pod template: running pods are not rolled. A
// batch in flight holds the topology row FOR SHARE, so while a
// transaction here holds it the switch must wait — and the StatefulSet
// must not grow meanwhile.
func TestScaleSwitchesTopologyFirst(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	db := newDatabase(t, ns)
	newProjection(t, ns, "activity-log", "activity_log", 2)

	eventually(t, 60*time.Second, "2 ready replicas", func() error {
		p := getProjection(t, ns, "activity-log")
		if p.Status.ReadyReplicas != 2 || p.Status.Partitions != 2 {
			return fmt.Errorf("%d ready, %d partitions", p.Status.ReadyReplicas, p.Status.Partitions)
		}
		return nil
	})
	// The operator's topology is its own: a standalone switch is refused.
	if top, err := projection.GetTopology(ctx, db, "activity_log"); err != nil || top.ManagedBy != projection.ManagerOperator {
		t.Fatalf("topology = %+v (%v), want operator-managed", top, err)
	}
	var managed *projection.TopologyManagedError
	if _, err := projection.SetTopology(ctx, db, "activity_log", 1); !errors.As(err, &managed) {
		t.Fatalf("standalone SetTopology on the operator's topology: %v, want *TopologyManagedError", err)
	}
	before, err := getStatefulSet(t, ns, "activity-log")
	if err != nil {
		t.Fatal(err)
	}
	podUIDs := map[string]types.UID{}
	var pods corev1.PodList
	if err := k8sClient.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, pod := range pods.Items {
		podUIDs[pod.Name] = pod.UID
	}

	// Hold the topology as a batch would.
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }() // before db.Close, which waits for it
	if _, err := tx.Exec(ctx, "SELECT 1 FROM projection_topology WHERE projection_name = 'activity_log' FOR SHARE"); err != nil {
		t.Fatal(err)
	}
	if out, err := env.Kubectl(ctx, "scale", "projection", "activity-log", "-n", ns, "--replicas=3"); err != nil {
		t.Fatalf("kubectl scale: %v\n%s", err, out)
	}
	// While the switch waits, the StatefulSet keeps its 2 replicas.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		sts, err := getStatefulSet(t, ns, "activity-log")
		if err != nil {
			t.Fatal(err)
		}
		if *sts.Spec.Replicas != 2 {
			t.Fatalf("StatefulSet scaled to %d while the topology switch could not run yet", *sts.Spec.Replicas)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "3 partitions in the database and 3 ready pods", func() error {
		p := getProjection(t, ns, "activity-log")
		if n, _ := topologyOf(t, db, "activity_log"); n != 3 || p.Status.ReadyReplicas != 3 {
			return fmt.Errorf("database has %d partitions, %d pods ready", n, p.Status.ReadyReplicas)
		}
		return nil
	})
	after, err := getStatefulSet(t, ns, "activity-log")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before.Spec.Template, after.Spec.Template); diff != "" {
		t.Errorf("scaling changed the pod template (pods would roll) (-before +after):\n%s", diff)
	}
	if _, gen := topologyOf(t, db, "activity_log"); gen != 2 {
		t.Errorf("topology generation %d after one switch, want 2", gen)
	}

	// Scale down: switch first, then the StatefulSet drops pods 1 and 2;
	// pod 0 is the same pod throughout.
	if out, err := env.Kubectl(ctx, "scale", "projection", "activity-log", "-n", ns, "--replicas=1"); err != nil {
		t.Fatalf("kubectl scale: %v\n%s", err, out)
	}
	eventually(t, 60*time.Second, "1 partition and 1 pod", func() error {
		p := getProjection(t, ns, "activity-log")
		if n, _ := topologyOf(t, db, "activity_log"); n != 1 || p.Status.Replicas != 1 || p.Status.Partitions != 1 {
			return fmt.Errorf("database has %d partitions, %d pods, status partitions %d", n, p.Status.Replicas, p.Status.Partitions)
		}
		return nil
	})
	var pod0 corev1.Pod
	if err := k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "activity-log-0"}, &pod0); err != nil {
		t.Fatal(err)
	}
	if pod0.UID != podUIDs["activity-log-0"] {
		t.Errorf("pod activity-log-0 was replaced across the rescales (uid %s, was %s)", pod0.UID, podUIDs["activity-log-0"])
	}
	final, err := getStatefulSet(t, ns, "activity-log")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before.Spec.Template, final.Spec.Template); diff != "" {
		t.Errorf("scaling down changed the pod template (-before +after):\n%s", diff)
	}

	// Each switch is one event that says what happened.
	eventually(t, 10*time.Second, "TopologySwitched events", func() error {
		got, err := eventsIn(ctx, ns, func(e corev1.Event) (string, bool) {
			return e.Message, e.Reason == "TopologySwitched"
		})
		if err != nil {
			return err
		}
		want := []string{
			"set up projection activity_log in 2 partitions (topology generation 1)",
			"switched projection activity_log from 2 to 3 partitions (topology generation 2)",
			"switched projection activity_log from 3 to 1 partition (topology generation 3)",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			return fmt.Errorf("TopologySwitched messages (-want +got):\n%s", diff)
		}
		return nil
	})
}

// A missing Secret, a missing key and an unreachable database each become
// the Degraded condition with its reason and a message without the
// password; fixing the Secret recovers by itself.
func TestBadDatabaseRecovers(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	newProjection(t, ns, "user-count", "user_count", 1)

	waitDegraded := func(reason string) *v1alpha1.Projection {
		t.Helper()
		var p *v1alpha1.Projection
		eventually(t, 30*time.Second, "Degraded "+reason, func() error {
			p = getProjection(t, ns, "user-count")
			if got := condition(p, v1alpha1.ConditionDegraded); !strings.HasPrefix(got, "True/"+reason+":") {
				return fmt.Errorf("Degraded is %q", got)
			}
			return nil
		})
		if got := condition(p, v1alpha1.ConditionReady); !strings.HasPrefix(got, "False/") {
			t.Errorf("Ready is %q while Degraded %s", got, reason)
		}
		if got := condition(p, v1alpha1.ConditionProgressing); !strings.HasPrefix(got, "False/"+v1alpha1.ReasonBlocked+": 0 of 1 worker pods exist") {
			t.Errorf("Progressing is %q while Degraded %s blocks the first pod", got, reason)
		}
		return p
	}
	p := waitDegraded(v1alpha1.ReasonSecretNotFound)
	if msg := condition(p, v1alpha1.ConditionDegraded); !strings.Contains(msg, `Secret "db" not found`) {
		t.Errorf("message %q does not name the Secret", msg)
	}
	// Never read from the database: lag and partitions are unknown, not 0.
	out, err := env.Kubectl(ctx, "get", "projection", "user-count", "-n", ns, "-o",
		"jsonpath={.status.lag}/{.status.partitions}/{.status.replicas}")
	if err != nil || out != "//0" {
		t.Errorf("status lag/partitions/replicas as stored without a database: %q (%v), want //0", out, err)
	}
	sts, err := getStatefulSet(t, ns, "user-count")
	if err != nil {
		t.Fatalf("StatefulSet of a Projection without its Secret: %v", err)
	}
	if *sts.Spec.Replicas != 0 {
		t.Errorf("StatefulSet has %d replicas before the topology could be set, want 0", *sts.Spec.Replicas)
	}

	newSecret(t, ns, "db", map[string]string{"url": "unused"})
	waitDegraded(v1alpha1.ReasonSecretKeyNotFound)

	// A closed port: nothing listens on port 1.
	const password = "hunter2-s3cret"
	unreachable := "postgres://app:" + password + "@127.0.0.1:1/app?sslmode=disable&connect_timeout=2"
	var secret corev1.Secret
	if err := k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "db"}, &secret); err != nil {
		t.Fatal(err)
	}
	secret.Data = map[string][]byte{"dsn": []byte(unreachable)}
	if err := k8sClient.Update(ctx, &secret); err != nil {
		t.Fatal(err)
	}
	p = waitDegraded(v1alpha1.ReasonDatabaseUnreachable)
	if msg := condition(p, v1alpha1.ConditionDegraded); strings.Contains(msg, password) {
		t.Errorf("the condition shows the password: %q", msg)
	}
	for _, e := range listEvents(t, ns) {
		if strings.Contains(e.Message, password) {
			t.Errorf("event %s shows the password: %q", e.Reason, e.Message)
		}
	}

	secret.Data = map[string][]byte{"dsn": []byte(pgtest.NewDatabase(t))}
	if err := k8sClient.Update(ctx, &secret); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "recovery", func() error {
		p := getProjection(t, ns, "user-count")
		if d, r := condition(p, v1alpha1.ConditionDegraded), condition(p, v1alpha1.ConditionReady); !strings.HasPrefix(d, "False/") || !strings.HasPrefix(r, "True/") {
			return fmt.Errorf("Degraded %q, Ready %q", d, r)
		}
		return nil
	})
	var reasons []string
	eventually(t, 10*time.Second, "events", func() error {
		var events corev1.EventList // events.k8s.io events are readable as core/v1 Events too
		if err := k8sClient.List(ctx, &events, client.InNamespace(ns)); err != nil {
			return err
		}
		reasons = reasons[:0]
		for _, e := range events.Items {
			reasons = append(reasons, e.Reason)
		}
		for _, want := range []string{v1alpha1.ReasonSecretNotFound, v1alpha1.ReasonDatabaseUnreachable, "Recovered", "TopologySwitched"} {
			if !strings.Contains(strings.Join(reasons, " "), want) {
				return fmt.Errorf("no %s event among %v", want, reasons)
			}
		}
		return nil
	})

	// The operator's log has one line per change, in order, and no
	// password; a few more status refreshes add nothing (a wait for
	// nothing to happen: no signal ends it).
	time.Sleep(3 * time.Second)
	var logged []string
	for line := range strings.Lines(operatorLog.String()) {
		var l struct{ Namespace, Reason, Msg string }
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("operator log line is not JSON: %v: %q", err, line)
		}
		if l.Namespace != ns || l.Reason == "" {
			continue
		}
		logged = append(logged, l.Reason)
		if strings.Contains(line, password) {
			t.Errorf("the operator log shows the password: %s", line)
		}
	}
	want := []string{v1alpha1.ReasonSecretNotFound, v1alpha1.ReasonSecretKeyNotFound, v1alpha1.ReasonDatabaseUnreachable,
		"TopologySwitched", "Recovered"}
	if diff := cmp.Diff(want, logged); diff != "" {
		t.Errorf("operator log lines about the Projection, by reason (-want +got):\n%s", diff)
	}
}

// status.lag and the per-partition positions are the checkpoints' view:
// compared with counts computed here from the events table.
func TestLagMatchesCheckpoints(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	db := newDatabase(t, ns)
	newProjectionWithTopology(t, ns, db, "counter", "counter", 2)

	store := projection.NewStore()
	for i := range 50 {
		evs := []projection.Event{{EventType: "Counted", Payload: []byte(`{}`)}, {EventType: "Counted", Payload: []byte(`{}`)}}
		if _, err := store.Append(ctx, db, "Counter", fmt.Sprintf("c-%d", i), projection.AnyVersion, evs...); err != nil {
			t.Fatal(err)
		}
	}
	// Partition 0 catches up (the kwok pods run nothing); partition 1
	// is left with its whole share.
	cfg := projection.DefaultProcessorConfig()
	cfg.PartitionKey, cfg.Topology = 0, projection.TopologyFollow
	if err := projection.NewProcessor(db, store, cfg).CatchUp(ctx, noop{}); err != nil {
		t.Fatal(err)
	}
	var share1, head int64
	if err := db.QueryRow(ctx, "SELECT count(*) FILTER (WHERE partition_hash % 2 = 1), max(global_position) FROM events").Scan(&share1, &head); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "status lag", func() error {
		p := getProjection(t, ns, "counter")
		want := []v1alpha1.PartitionStatus{{Partition: 0, Position: head}, {Partition: 1, Lag: share1}}
		if diff := cmp.Diff(want, p.Status.PartitionStatuses); diff != "" || p.Status.Lag != share1 || p.Status.HeadPosition != head {
			return fmt.Errorf("lag %d head %d, want %d and %d; partitions (-want +got):\n%s", p.Status.Lag, p.Status.HeadPosition, share1, head, diff)
		}
		if p.Status.LagSeconds < 0 {
			return fmt.Errorf("lagSeconds %d", p.Status.LagSeconds)
		}
		if got := condition(p, v1alpha1.ConditionStalled); !strings.HasPrefix(got, "False/") {
			return fmt.Errorf("Stalled is %q for a Projection created moments ago", got)
		}
		return nil
	})

	// Partition 1 runs, then falls behind and its checkpoint has not
	// moved for longer than StalledAfter: Stalled. It catches up: not.
	cfg.PartitionKey = 1
	if err := projection.NewProcessor(db, store, cfg).CatchUp(ctx, noop{}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := store.Append(ctx, db, "Counter", fmt.Sprintf("c-%d", i), projection.AnyVersion,
			projection.Event{EventType: "Counted", Payload: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(ctx, "UPDATE projection_checkpoints SET updated_at = now() - interval '5 minutes' WHERE projection_name = 'counter' AND partition_key = 1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "Stalled", func() error {
		if got := condition(getProjection(t, ns, "counter"), v1alpha1.ConditionStalled); !strings.HasPrefix(got, "True/"+v1alpha1.ReasonNoProgress+": partition 1 ") {
			return fmt.Errorf("Stalled is %q", got)
		}
		return nil
	})
	if err := projection.NewProcessor(db, store, cfg).CatchUp(ctx, noop{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "not Stalled", func() error {
		if got := condition(getProjection(t, ns, "counter"), v1alpha1.ConditionStalled); !strings.HasPrefix(got, "False/") {
			return fmt.Errorf("Stalled is %q", got)
		}
		return nil
	})
	// Both changes are Events, one each.
	eventually(t, 10*time.Second, "NoProgress and CheckpointsMoving events", func() error {
		got, err := eventsIn(ctx, ns, func(e corev1.Event) (string, bool) {
			return fmt.Sprintf("%s %s x%d", e.Type, e.Reason, max(e.Count, 1)),
				e.Reason == v1alpha1.ReasonNoProgress || e.Reason == v1alpha1.ReasonProgressing
		})
		if err != nil {
			return err
		}
		want := []string{"Normal CheckpointsMoving x1", "Warning NoProgress x1"}
		if diff := cmp.Diff(want, got); diff != "" {
			return fmt.Errorf("Stalled events (-want +got):\n%s", diff)
		}
		return nil
	})
}

type noop struct{}

func (noop) Name() string                                                     { return "counter" }
func (noop) Handle(context.Context, pgx.Tx, *projection.PersistedEvent) error { return nil }

// A worker that exits on an error (here: the image does not know the
// projection) leaves its last log lines as the container's termination
// message; the operator shows it in the Degraded condition, and clears it
// once the worker runs. The pod stands in for a worker: its status is
// written here, as the kubelet would, since the kwok node runs no
// containers.
func TestWorkerFailureIsReported(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	dsn := pgtest.NewDatabase(t)
	newSecret(t, ns, "db", map[string]string{"dsn": dsn})
	p := newProjection(t, ns, "typo", "user_cuont", 1)

	// A controller owner other than the StatefulSet keeps the StatefulSet
	// controller from adopting and deleting it; the unmatched node
	// selector keeps it unscheduled.
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "owner"}}
	if err := k8sClient.Create(ctx, owner); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "typo-worker-standin", Labels: resources.Labels(p),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "owner", UID: owner.UID, Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"nowhere": "true"},
			Containers:   []corev1.Container{{Name: "worker", Image: "example.invalid/w:1"}},
		},
	}
	if err := k8sClient.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	// The scheduler writes the pod's status too: retry on conflicts.
	setStatus := func(cs corev1.ContainerStatus) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
				return err
			}
			pod.Status.ContainerStatuses = []corev1.ContainerStatus{cs}
			return k8sClient.Status().Update(ctx, pod)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	const logLine = `{"level":"ERROR","msg":"invalid worker configuration","error":"invalid worker config: unknown projection \"user_cuont\"; this worker has user_count, revenue, activity_log"}`
	failing := corev1.ContainerStatus{
		Name: "worker", Image: "example.invalid/w:1", ImageID: "example.invalid/w@sha256:0", RestartCount: 3,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 2, Reason: "Error", Message: logLine}},
	}
	setStatus(failing)
	eventually(t, 30*time.Second, "Degraded WorkerFailing", func() error {
		got := condition(getProjection(t, ns, "typo"), v1alpha1.ConditionDegraded)
		if !strings.HasPrefix(got, "True/"+v1alpha1.ReasonWorkerFailing+":") || !strings.Contains(got, `unknown projection \"user_cuont\"`) {
			return fmt.Errorf("Degraded is %q", got)
		}
		return nil
	})

	running := failing
	running.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
	running.Ready = true
	setStatus(running)
	eventually(t, 30*time.Second, "Degraded cleared", func() error {
		if got := condition(getProjection(t, ns, "typo"), v1alpha1.ConditionDegraded); !strings.HasPrefix(got, "False/") {
			return fmt.Errorf("Degraded is %q", got)
		}
		return nil
	})
}

// createOrders creates Projection orders (order_ledger, 2 replicas, database
// Secret db) in namespace ns, with the changes edit makes to its spec.
func createOrders(t *testing.T, ns string, edit func(*v1alpha1.ProjectionSpec)) {
	t.Helper()
	p := &v1alpha1.Projection{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "orders"},
		Spec: v1alpha1.ProjectionSpec{
			ProjectionName: "order_ledger",
			Replicas:       ptr.To[int32](2),
			Database:       v1alpha1.DatabaseSpec{SecretRef: v1alpha1.SecretKeySelector{Name: "db"}},
		},
	}
	edit(&p.Spec)
	if err := k8sClient.Create(t.Context(), p); err != nil {
		t.Fatal(err)
	}
}

// A spec that the API server accepts but that cannot make a pod (a mount of
// a volume the spec does not have) is reported as Degraded InvalidSpec,
// and neither the topology nor a StatefulSet is made until it is fixed.
func TestInvalidSpecIsReported(t *testing.T) {
	ns := newNamespace(t)
	db := newDatabase(t, ns)
	createOrders(t, ns, func(s *v1alpha1.ProjectionSpec) {
		s.VolumeMounts = []corev1.VolumeMount{{Name: "db-ca", MountPath: "/etc/db-ca"}}
	})
	eventually(t, 30*time.Second, "Degraded InvalidSpec", func() error {
		got := condition(getProjection(t, ns, "orders"), v1alpha1.ConditionDegraded)
		if !strings.HasPrefix(got, "True/"+v1alpha1.ReasonInvalidSpec+":") || !strings.Contains(got, `spec.volumeMounts[0] mounts volume "db-ca"`) {
			return fmt.Errorf("Degraded is %q", got)
		}
		return nil
	})
	if got := condition(getProjection(t, ns, "orders"), v1alpha1.ConditionReady); !strings.HasPrefix(got, "False/"+v1alpha1.ReasonInvalidSpec) {
		t.Errorf("Ready is %q, want False/InvalidSpec", got)
	}
	if _, err := getStatefulSet(t, ns, "orders"); !apierrors.IsNotFound(err) {
		t.Errorf("StatefulSet of an invalid spec: %v, want none", err)
	}
	if n, _ := topologyOf(t, db, "order_ledger"); n != 0 {
		t.Errorf("topology of an invalid spec has %d partitions, want none", n)
	}

	// Fixed: the volume is added, and the Projection comes up.
	mustUpdateSpec(t, ns, "orders", func(s *v1alpha1.ProjectionSpec) {
		s.Volumes = []corev1.Volume{{Name: "db-ca", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	})
	eventually(t, 60*time.Second, "StatefulSet with 2 replicas and no Degraded", func() error {
		sts, err := getStatefulSet(t, ns, "orders")
		if err != nil {
			return err
		}
		if got := condition(getProjection(t, ns, "orders"), v1alpha1.ConditionDegraded); *sts.Spec.Replicas != 2 || !strings.HasPrefix(got, "False/") {
			return fmt.Errorf("replicas %d, Degraded %q", *sts.Spec.Replicas, got)
		}
		return nil
	})
}

// A connection string whose sslrootcert names a CA file that the
// Projection mounts into its pods from a ConfigMap (a path that exists in
// the pods, not in the operator): the operator reads the CA from the
// ConfigMap and verifies the TLS-only server with it, as the pods do. Until
// the ConfigMap exists, the Projection says so.
func TestMountedCAVerifiesTheServer(t *testing.T) {
	ns := newNamespace(t)
	srv := pgtest.StartTLS(t)
	dbname := srv.NewDatabase(t)
	newSecret(t, ns, "db", map[string]string{"dsn": srv.URL(dbname, "sslmode=verify-full&sslrootcert=/etc/db-ca/ca.crt")})
	createOrders(t, ns, func(s *v1alpha1.ProjectionSpec) {
		s.Volumes = []corev1.Volume{{Name: "db-ca", VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "db-ca"}},
		}}}
		s.VolumeMounts = []corev1.VolumeMount{{Name: "db-ca", MountPath: "/etc/db-ca", ReadOnly: true}}
	})
	eventually(t, 30*time.Second, "Degraded CABundleNotFound", func() error {
		got := condition(getProjection(t, ns, "orders"), v1alpha1.ConditionDegraded)
		if !strings.HasPrefix(got, "True/"+v1alpha1.ReasonCANotFound+":") || !strings.Contains(got, `ConfigMap "db-ca"`) {
			return fmt.Errorf("Degraded is %q", got)
		}
		return nil
	})

	// A CA that did not sign the server's certificate: verification fails.
	wrong := pgtest.NewCA(t, "another CA")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db-ca"}, Data: map[string]string{"ca.crt": string(wrong.CertPEM)}}
	if err := k8sClient.Create(t.Context(), cm); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "Degraded DatabaseUnreachable with a certificate error", func() error {
		got := condition(getProjection(t, ns, "orders"), v1alpha1.ConditionDegraded)
		if !strings.HasPrefix(got, "True/"+v1alpha1.ReasonDatabaseUnreachable+":") || !strings.Contains(got, "certificate") {
			return fmt.Errorf("Degraded is %q", got)
		}
		return nil
	})

	// The right CA: the operator connects over TLS and switches the topology.
	cm.Data["ca.crt"] = string(srv.CA.CertPEM)
	if err := k8sClient.Update(t.Context(), cm); err != nil {
		t.Fatal(err)
	}
	admin := pgtest.OpenPool(t, srv.URL(dbname, "sslmode=verify-full&sslrootcert="+srv.CA.CertFile))
	eventually(t, 60*time.Second, "topology of 2 partitions and a StatefulSet of 2", func() error {
		if n, _ := topologyOf(t, admin, "order_ledger"); n != 2 {
			return fmt.Errorf("topology has %d partitions; Degraded %q", n, condition(getProjection(t, ns, "orders"), v1alpha1.ConditionDegraded))
		}
		sts, err := getStatefulSet(t, ns, "orders")
		if err != nil {
			return err
		}
		if *sts.Spec.Replicas != 2 {
			return fmt.Errorf("StatefulSet replicas %d", *sts.Spec.Replicas)
		}
		return nil
	})
	var tlsConns int
	if err := admin.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
		WHERE ssl AND application_name = 'projectionist-operator'`).Scan(&tlsConns); err != nil {
		t.Fatal(err)
	}
	t.Logf("operator connections over TLS: %d", tlsConns)
}

// spec.suspend stops the pods and keeps the topology: Ready False
// Suspended, no topology switch while suspended (even when replicas
// changes), and resuming brings the pods back under the same generation.
func TestSuspendKeepsTopology(t *testing.T) {
	ns := newNamespace(t)
	db := newDatabase(t, ns)
	newProjection(t, ns, "orders", "order_ledger", 2)
	ready := func(what string, pods int32) {
		t.Helper()
		eventually(t, 60*time.Second, what, func() error {
			p := getProjection(t, ns, "orders")
			sts, err := getStatefulSet(t, ns, "orders")
			if err != nil {
				return err
			}
			if *sts.Spec.Replicas != pods || p.Status.ReadyReplicas != pods || !strings.HasPrefix(condition(p, v1alpha1.ConditionReady), "True/") {
				return fmt.Errorf("StatefulSet replicas %d, ready %d, Ready %q", *sts.Spec.Replicas, p.Status.ReadyReplicas, condition(p, v1alpha1.ConditionReady))
			}
			return nil
		})
	}
	ready("2 pods Ready", 2)

	mustUpdateSpec(t, ns, "orders", func(s *v1alpha1.ProjectionSpec) { s.Suspend = ptr.To(true) })
	eventually(t, 60*time.Second, "suspended: no pods, Ready False/Suspended", func() error {
		p := getProjection(t, ns, "orders")
		sts, err := getStatefulSet(t, ns, "orders")
		if err != nil {
			return err
		}
		got := condition(p, v1alpha1.ConditionReady)
		if *sts.Spec.Replicas != 0 || p.Status.Replicas != 0 || !strings.HasPrefix(got, "False/"+v1alpha1.ReasonSuspended+": ") ||
			!strings.Contains(got, "brings back 2 partitions") {
			return fmt.Errorf("StatefulSet replicas %d, status replicas %d, Ready %q", *sts.Spec.Replicas, p.Status.Replicas, got)
		}
		if got := condition(p, v1alpha1.ConditionStalled); got != "" && !strings.HasPrefix(got, "False/"+v1alpha1.ReasonSuspended) {
			return fmt.Errorf("Stalled is %q while suspended", got)
		}
		return nil
	})
	// Suspended, replicas 2 -> 3: nothing is switched until the resume.
	mustUpdateSpec(t, ns, "orders", func(s *v1alpha1.ProjectionSpec) { s.Replicas = ptr.To[int32](3) })
	time.Sleep(2 * time.Second) // several status passes (the suite's interval is short)
	if n, gen := topologyOf(t, db, "order_ledger"); n != 2 || gen != 1 {
		t.Fatalf("while suspended the topology went to %d partitions, generation %d; want 2, 1", n, gen)
	}
	mustUpdateSpec(t, ns, "orders", func(s *v1alpha1.ProjectionSpec) { s.Replicas, s.Suspend = ptr.To[int32](2), nil })
	ready("resumed: 2 pods Ready", 2)
	wantTopology(t, db, "order_ledger", 2, 1, "after the resume (no switch)")
}

// On an empty log CaughtUp is False (LogEmpty), not the cut-over signal:
// the read model has projected nothing. It turns True once the partition
// has passed the events appended later.
func TestCaughtUpWaitsForEvents(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	db := newMigratedDatabase(t, ns)
	newProjection(t, ns, "counter-v2", "counter", 1) // noop{} is projection "counter"
	eventually(t, 30*time.Second, "CaughtUp False/LogEmpty on the empty log", func() error {
		p := getProjection(t, ns, "counter-v2")
		want := "False/" + v1alpha1.ReasonLogEmpty + ": the event log is empty: nothing to catch up with yet"
		if got := condition(p, v1alpha1.ConditionCaughtUp); p.Status.Partitions != 1 || got != want {
			return fmt.Errorf("%d partitions, CaughtUp %q; want 1 and %q", p.Status.Partitions, got, want)
		}
		return nil
	})
	store := projection.NewStore()
	for i := range 20 {
		if _, err := store.Append(ctx, db, "Counter", fmt.Sprintf("c-%d", i), projection.AnyVersion,
			projection.Event{EventType: "Counted", Payload: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := projection.DefaultProcessorConfig()
	cfg.Topology = projection.TopologyFollow
	if err := projection.NewProcessor(db, store, cfg).CatchUp(ctx, noop{}); err != nil {
		t.Fatal(err)
	}
	// The head it names is the previous status read's: any of the 20
	// appends, depending on when that read came, but never the empty log.
	eventually(t, 30*time.Second, "CaughtUp True/LagReachedZero at a head of 1 to 20", func() error {
		want := "True/" + v1alpha1.ReasonLagReachedZero + ": the partition had passed every event in its scope up to position "
		got := condition(getProjection(t, ns, "counter-v2"), v1alpha1.ConditionCaughtUp)
		head, ok := strings.CutPrefix(got, want)
		if !ok || strings.HasPrefix(head, "0 ") {
			return fmt.Errorf("CaughtUp %q, want %q and a position of 1 to 20", got, want)
		}
		return nil
	})
}

// CaughtUp turns True the first time every partition has lag 0 and stays
// True when new events arrive.
func TestCaughtUpOnceLagReachesZero(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	db := newMigratedDatabase(t, ns)
	store := projection.NewStore()
	appendSome := func() {
		t.Helper()
		for i := range 20 {
			if _, err := store.Append(ctx, db, "Counter", fmt.Sprintf("c-%d", i), projection.AnyVersion,
				projection.Event{EventType: "Counted", Payload: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendSome()
	newProjection(t, ns, "counter-v2", "counter", 1) // noop{} is projection "counter"
	eventually(t, 30*time.Second, "CaughtUp False/CatchingUp with lag", func() error {
		p := getProjection(t, ns, "counter-v2")
		if got := condition(p, v1alpha1.ConditionCaughtUp); p.Status.Lag == 0 || !strings.HasPrefix(got, "False/"+v1alpha1.ReasonCatchingUp) {
			return fmt.Errorf("lag %d, CaughtUp %q", p.Status.Lag, got)
		}
		return nil
	})
	cfg := projection.DefaultProcessorConfig()
	cfg.Topology = projection.TopologyFollow
	if err := projection.NewProcessor(db, store, cfg).CatchUp(ctx, noop{}); err != nil {
		t.Fatal(err)
	}
	var since time.Time
	eventually(t, 30*time.Second, "CaughtUp True/LagReachedZero", func() error {
		p := getProjection(t, ns, "counter-v2")
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionCaughtUp)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != v1alpha1.ReasonLagReachedZero {
			return fmt.Errorf("CaughtUp %q", condition(p, v1alpha1.ConditionCaughtUp))
		}
		since = c.LastTransitionTime.Time
		return nil
	})
	// kubectl wait, as the blue/green docs use it.
	if out, err := env.Kubectl(ctx, "wait", "--for=condition=CaughtUp", "projection/counter-v2", "-n", ns, "--timeout=10s"); err != nil {
		t.Errorf("kubectl wait --for=condition=CaughtUp: %v\n%s", err, out)
	}
	appendSome()
	eventually(t, 30*time.Second, "lag again, CaughtUp still True since the first time", func() error {
		p := getProjection(t, ns, "counter-v2")
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionCaughtUp)
		if p.Status.Lag == 0 {
			return fmt.Errorf("no lag yet")
		}
		if c == nil || c.Status != metav1.ConditionTrue || !c.LastTransitionTime.Time.Equal(since) {
			return fmt.Errorf("CaughtUp %+v, want True since %s", c, since)
		}
		return nil
	})
}
