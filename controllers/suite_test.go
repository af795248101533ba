package controllers_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers"
	"github.com/projectionist/projectionist/internal/kubetest"
	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/internal/proctest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// The package's tests share one API server with kube-controller-manager,
// kube-scheduler and a kwok node beside it (so StatefulSet pods are
// created, scheduled and become Ready), one operator manager, and one
// PostgreSQL server; each test has its own namespace and database.
var (
	env       *kubetest.Env
	k8sClient client.Client
	// operatorLog has the operator's log at level Info, as JSON lines.
	operatorLog = &proctest.SyncBuffer{}
)

const workerImage = "example.invalid/projectionist:test"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	defer pgtest.Stop()
	return kubetest.RunTests(m, kubetest.Options{Cluster: true}, startOperator)
}

// startOperator starts the operator's manager against env, as the suite's
// one operator; the returned func stops it.
func startOperator(e *kubetest.Env) (stop func() error, err error) {
	env = e
	k8sClient, err = client.New(env.Config, client.Options{Scheme: controllers.Scheme()})
	if err != nil {
		return nil, err
	}
	level := slog.LevelWarn
	if os.Getenv("OPERATOR_LOG") != "" {
		level = slog.LevelDebug
	}
	mgr, err := controllers.NewManager(env.Config, controllers.ManagerOptions{
		WorkerImage:    workerImage,
		MetricsAddr:    "0",
		ProbeAddr:      "0",
		StatusInterval: time.Second,
		// Above every other test's count; an unused index goes at once.
		PartitionIndexMinPartitions: partitionIndexMin,
		PartitionIndexRetention:     time.Millisecond,
		// A deleted Projection whose database is down goes soon.
		ReleaseTimeout: 3 * time.Second,
		// Long enough for two slow passes (5s each), short enough to wait
		// for.
		SlowReadGrace: 10 * time.Second,
		Logger: slog.New(slog.NewMultiHandler(
			slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}),
			slog.NewJSONHandler(operatorLog, &slog.HandlerOptions{Level: slog.LevelInfo}))),
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- mgr.Start(ctx) }()
	return func() error {
		cancel()
		if err := <-stopped; err != nil {
			return fmt.Errorf("operator: %w", err)
		}
		return nil
	}, nil
}

// newNamespace creates a namespace for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: strings.TrimRight(name, "-") + "-"}}
	if err := k8sClient.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// newSecret creates Secret name in ns with data.
func newSecret(t *testing.T, ns, name string, data map[string]string) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, StringData: data}
	if err := k8sClient.Create(t.Context(), s); err != nil {
		t.Fatal(err)
	}
}

// newDatabase creates a database for one test, and the Secret "db" in ns
// holding its DSN; it returns a pool on it.
func newDatabase(t *testing.T, ns string) *pgxpool.Pool {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	newSecret(t, ns, "db", map[string]string{"dsn": dsn})
	return pgtest.OpenPool(t, dsn)
}

// newMigratedDatabase is [newDatabase] with the schema migrated.
func newMigratedDatabase(t *testing.T, ns string) *pgxpool.Pool {
	t.Helper()
	db := newDatabase(t, ns)
	if _, err := projection.Migrate(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

// newProjection creates a Projection reading Secret "db".
func newProjection(t *testing.T, ns, name, projectionName string, replicas int32) *v1alpha1.Projection {
	t.Helper()
	p := &v1alpha1.Projection{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.ProjectionSpec{
			ProjectionName: projectionName,
			Replicas:       ptr.To(replicas),
			Database:       v1alpha1.DatabaseSpec{SecretRef: v1alpha1.SecretKeySelector{Name: "db"}},
		},
	}
	if err := k8sClient.Create(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// statefulSetReplicasAre waits until the StatefulSet name asks for n
// replicas.
func statefulSetReplicasAre(t *testing.T, ns, name string, n int32) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("StatefulSet %s with %d replicas", name, n), func() error {
		sts, err := getStatefulSet(t, ns, name)
		if err != nil {
			return err
		}
		if got := *sts.Spec.Replicas; got != n {
			return fmt.Errorf("replicas %d", got)
		}
		return nil
	})
}

// waitForEvent waits for an Event of type and reason on the Projection
// whose note contains note.
func waitForEvent(t *testing.T, ns, name, eventType, reason, note string) {
	t.Helper()
	eventually(t, 30*time.Second, "a "+eventType+" "+reason+" Event", func() error {
		var list eventsv1.EventList
		if err := k8sClient.List(t.Context(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Reason == reason && e.Type == eventType && e.Regarding.Name == name && strings.Contains(e.Note, note) {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(list.Items))
	})
}

// listEvents lists the Events in ns (events.k8s.io Events read as core/v1
// Events).
func listEvents(t *testing.T, ns string) []corev1.Event {
	t.Helper()
	var events corev1.EventList
	if err := k8sClient.List(t.Context(), &events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return events.Items
}

// updateSpec changes the spec of Projection name with f and returns the
// API server's answer; a conflict (the operator writes the status
// meanwhile) is retried on a fresh copy.
func updateSpec(t *testing.T, ns, name string, f func(*v1alpha1.ProjectionSpec)) error {
	t.Helper()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := getProjection(t, ns, name)
		f(&p.Spec)
		return k8sClient.Update(t.Context(), p)
	})
}

// mustUpdateSpec is [updateSpec] for a change the API server must accept.
func mustUpdateSpec(t *testing.T, ns, name string, f func(*v1alpha1.ProjectionSpec)) {
	t.Helper()
	if err := updateSpec(t, ns, name, f); err != nil {
		t.Fatal(err)
	}
}

// newProjectionWithTopology is [newProjection], and waits until the
// operator has set the topology of replicas partitions in db.
func newProjectionWithTopology(t *testing.T, ns string, db *pgxpool.Pool, name, projectionName string, replicas int32) *v1alpha1.Projection {
	t.Helper()
	p := newProjection(t, ns, name, projectionName, replicas)
	eventually(t, 30*time.Second, "the topology", func() error {
		if n, _ := topologyOf(t, db, projectionName); n != int(replicas) {
			return fmt.Errorf("%d partitions", n)
		}
		return nil
	})
	return p
}

// eventually polls cond every 50ms until it returns nil, failing the test
// with cond's last error after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	proctest.Eventually(t, timeout, 50*time.Millisecond, what, cond)
}

func getProjection(t *testing.T, ns, name string) *v1alpha1.Projection {
	t.Helper()
	var p v1alpha1.Projection
	if err := k8sClient.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: name}, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

func getStatefulSet(t *testing.T, ns, name string) (*appsv1.StatefulSet, error) {
	var sts appsv1.StatefulSet
	err := k8sClient.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: name}, &sts)
	return &sts, err
}

// condition returns the Projection's condition of type typ, formatted
// "Status/Reason: message", or "" if it has none.
func condition(p *v1alpha1.Projection, typ string) string {
	c := meta.FindStatusCondition(p.Status.Conditions, typ)
	if c == nil {
		return ""
	}
	return fmt.Sprintf("%s/%s: %s", c.Status, c.Reason, c.Message)
}
