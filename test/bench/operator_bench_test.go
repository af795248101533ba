package bench_test

// BenchmarkCreate1000Projections: the scale requirement. The real
// operator binary (go build ./cmd/projectionist, run as `projectionist
// operator`, a process of its own so that its peak RSS is its own) against
// an API server alone (envtest: kube-apiserver and etcd, no
// kube-controller-manager, so no pods: this measures the operator, not the
// cluster) and one PostgreSQL database.
//
//	make bench-operator
//	KUBEBUILDER_ASSETS=bin/k8s/v1.37.1 go test ./test/bench -run '^$' -bench Create1000Projections -benchtime 1x -timeout 30m
//
// An iteration starts a fresh API server, a fresh database and a fresh
// operator and waits until its controller has started (untimed), then,
// timed, creates 1000 Projections (replicas 1, all in one namespace, all
// reading Secret "db" whose DSN names the one database) from 8 goroutines,
// and polls (a List every 500ms, from a cache the bench's own watches keep
// current, so that polling costs the API server nothing) until every
// StatefulSet exists and every Projection has status.observedGeneration ==
// metadata.generation and a Ready or Degraded condition. Then, untimed, it
// checks the outcome against the API server and the database: no
// Projection Degraded, 1000 topology rows of one partition each, 1000
// StatefulSets of one replica.
//
// Metrics (averages over iterations; the peak RSS is the largest):
// s-to-all-created, s-to-all-statefulsets and s-to-all-observed count from
// the first create; MiB-peak-rss is the operator's VmHWM read once all were
// observed. Targets: s-to-all-observed under 60, MiB-peak-rss under 150.
//
// $BENCH_OPERATOR_FLAGS adds flags to the operator's command line (split at
// spaces), for comparing settings; a later flag wins, so
// "--metrics-addr 127.0.0.1:8080" serves the operator's metrics.
// $BENCH_BIG_SECRETS=N creates N unrelated Secrets of 512 KiB each (as
// Helm's release Secrets are) before the operator starts: its peak RSS
// shows whether it caches Secrets it does not read.
// $BENCH_HOLD (a duration) keeps the operator running that much longer
// after all were observed, before its peak RSS is read: the steady state,
// where every Projection's status is refreshed every --status-interval.
// Over the hold the API server's own request counter
// (apiserver_request_total) gives two more metrics: api-req/s-steady (all
// requests but the bench's own) and apply-req/s-steady (server-side
// applies).

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers"
	"github.com/projectionist/projectionist/internal/kubetest"
	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/internal/proctest"
)

const (
	benchProjections = 1000
	benchNamespace   = "bench"
	// createWorkers create the Projections concurrently, as a burst of
	// kubectl applies or a GitOps sync would.
	createWorkers = 8
	pollInterval  = 500 * time.Millisecond
	// waitTimeout bounds one iteration's wait, far above the 60 s target
	// so that a miss is measured rather than cut off.
	waitTimeout = 15 * time.Minute
	mib         = 1 << 20
)

// TestMain stops the PostgreSQL server the benchmark started, if it ran.
// Nothing starts unless a benchmark runs.
func TestMain(m *testing.M) {
	// The bench's watches log through controller-runtime; the operator's
	// own log is what matters.
	ctrllog.SetLogger(logr.Discard())
	pgtest.Main(m)
}

func BenchmarkCreate1000Projections(b *testing.B) {
	var hold time.Duration
	if v := os.Getenv("BENCH_HOLD"); v != "" {
		var err error
		if hold, err = time.ParseDuration(v); err != nil {
			b.Fatalf("$BENCH_HOLD: %v", err)
		}
	}
	bin := buildOperator(b)
	b.ResetTimer()
	var created, allSTS, allObserved time.Duration
	var peakRSS int64
	var steadyRequests, steadyApplies float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		r := startRun(b, bin)
		b.StartTimer()
		res := r.createAndWait(b)
		b.StopTimer()
		r.verify(b)
		if hold > 0 {
			b.Logf("holding the operator for %s ($BENCH_HOLD)", hold)
			before := requestCounts(b, r.env)
			time.Sleep(hold) // counts the requests of an idle operator over $BENCH_HOLD
			after := requestCounts(b, r.env)
			var all, applies float64
			for key, n := range after {
				all += n - before[key]
				if strings.HasPrefix(key, "APPLY ") {
					applies += n - before[key]
				}
			}
			steadyRequests += all / hold.Seconds()
			steadyApplies += applies / hold.Seconds()
			b.Logf("steady state: %.1f API requests/s, %.1f applies/s over %s", all/hold.Seconds(), applies/hold.Seconds(), hold)
		}
		rss, err := proctest.PeakRSS(r.operator.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		r.logErrors(b)
		r.stop(b)
		created += res.created
		allSTS += res.allStatefulSets
		allObserved += res.allObserved
		peakRSS = max(peakRSS, rss)
		b.Logf("iteration %d: created in %s, all StatefulSets after %s, all observed after %s, operator VmHWM %.1f MiB",
			i, res.created.Round(time.Millisecond), res.allStatefulSets.Round(time.Millisecond),
			res.allObserved.Round(time.Millisecond), float64(rss)/mib)
	}
	n := float64(b.N)
	b.ReportMetric(created.Seconds()/n, "s-to-all-created")
	b.ReportMetric(allSTS.Seconds()/n, "s-to-all-statefulsets")
	b.ReportMetric(allObserved.Seconds()/n, "s-to-all-observed")
	b.ReportMetric(float64(peakRSS)/mib, "MiB-peak-rss")
	if hold > 0 {
		b.ReportMetric(steadyRequests/n, "api-req/s-steady")
		b.ReportMetric(steadyApplies/n, "apply-req/s-steady")
	}
}

// requestCounts is kubetest.RequestCounts for the run's API server.
func requestCounts(b *testing.B, env *kubetest.Env) map[string]float64 {
	b.Helper()
	counts, err := kubetest.RequestCounts(context.Background(), env.Config)
	if err != nil {
		b.Fatal(err)
	}
	return counts
}

// buildOperator builds the projectionist binary.
func buildOperator(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "projectionist")
	// go test puts its own GOROOT/bin first in PATH, so "go" is this Go.
	out, err := exec.Command("go", "build", "-o", bin, "github.com/projectionist/projectionist/cmd/projectionist").CombinedOutput()
	if err != nil {
		b.Fatalf("building the operator: %v\n%s", err, out)
	}
	return bin
}

// run is one iteration's API server, database and operator.
type run struct {
	env    *kubetest.Env
	client client.Client
	// watched holds the Projections and the StatefulSets' metadata, kept
	// current by watches: polling it costs the API server nothing, where
	// listing 1000 Projections every 500ms would compete with the operator
	// for its CPU.
	watched     cache.Cache
	stopWatches context.CancelFunc
	dsn         string
	operator    *exec.Cmd
	exited      chan struct{} // closed when the operator exits
	logPath     string
}

// startRun starts the API server, creates the namespace and the Secret,
// starts the bench's watches, and starts the operator, waiting until its
// controller has started.
func startRun(b *testing.B, bin string) *run {
	b.Helper()
	env, err := kubetest.Start(kubetest.Options{})
	if err != nil {
		b.Fatal(err)
	}
	r := &run{env: env}
	b.Cleanup(func() { r.stop(b) })
	r.dsn = pgtest.NewDatabase(b)

	cfg := rest.CopyConfig(env.Config)
	// No client-side rate limit: the creates must not be what is slow.
	cfg.QPS, cfg.Burst = -1, 0
	r.client, err = client.New(cfg, client.Options{Scheme: controllers.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := r.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}}); err != nil {
		b.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: "db"}, StringData: map[string]string{"dsn": r.dsn}}
	if err := r.client.Create(ctx, secret); err != nil {
		b.Fatal(err)
	}
	createBigSecrets(b, r.client)
	r.watched, err = cache.New(cfg, cache.Options{Scheme: controllers.Scheme(),
		DefaultNamespaces: map[string]cache.Config{benchNamespace: {}}})
	if err != nil {
		b.Fatal(err)
	}
	for _, o := range []client.Object{&v1alpha1.Projection{}, statefulSetMetadata()} {
		if _, err := r.watched.GetInformer(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
	var watchCtx context.Context
	watchCtx, r.stopWatches = context.WithCancel(context.Background())
	go func() { _ = r.watched.Start(watchCtx) }()
	if !r.watched.WaitForCacheSync(ctx) {
		b.Fatal("the bench's watches did not sync")
	}

	port, err := freePort()
	if err != nil {
		b.Fatal(err)
	}
	r.logPath = filepath.Join(b.TempDir(), "operator.log")
	logFile, err := os.Create(r.logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close() // the process holds its own descriptor
	probeAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	args := []string{"operator", "--kubeconfig", env.Kubeconfig, "--metrics-addr", "0",
		"--health-probe-addr", probeAddr, "--worker-image", "example.invalid/w:1"}
	args = append(args, strings.Fields(os.Getenv("BENCH_OPERATOR_FLAGS"))...)
	r.operator = exec.Command(bin, args...)
	r.operator.Stdout, r.operator.Stderr = logFile, logFile
	if err := r.operator.Start(); err != nil {
		b.Fatal(err)
	}
	r.exited = make(chan struct{})
	go func() { _ = r.operator.Wait(); close(r.exited) }()
	b.Logf("operator: %s %s", bin, strings.Join(args, " "))

	// /readyz answers once the informers have synced, a moment before the
	// controller starts its workers, and a Projection created before then
	// arrives in the initial list, which
	// controller-runtime's priority queue serves last: behind every other
	// Projection's status refreshes, for minutes once those keep the
	// workers busy. Start when the controller has started its workers, as
	// it logs.
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get("http://" + probeAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && r.logged(b, `"msg":"Starting workers"`) {
				return r
			}
		}
		select {
		case <-r.exited:
			b.Fatalf("the operator exited before it was ready:\n%s", r.logTail())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("the operator was not ready after a minute:\n%s", r.logTail())
		}
	}
}

type result struct {
	created, allStatefulSets, allObserved time.Duration
}

// createAndWait creates the Projections and waits until each has its
// StatefulSet and an observed status.
func (r *run) createAndWait(b *testing.B) result {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	start := time.Now()
	var res result
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range createWorkers {
		g.Go(func() error {
			for i := next.Add(1) - 1; i < benchProjections; i = next.Add(1) - 1 {
				p := &v1alpha1.Projection{
					ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: fmt.Sprintf("p-%04d", i)},
					Spec: v1alpha1.ProjectionSpec{
						Replicas: ptr.To[int32](1),
						Database: v1alpha1.DatabaseSpec{SecretRef: v1alpha1.SecretKeySelector{Name: "db"}},
					},
				}
				if err := r.client.Create(gctx, p); err != nil {
					return fmt.Errorf("creating Projection %s: %w", p.Name, err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	res.created = time.Since(start)

	lastLog := start
	for {
		stsList := &metav1.PartialObjectMetadataList{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSetList"}}
		if err := r.watched.List(ctx, stsList, client.InNamespace(benchNamespace), client.UnsafeDisableDeepCopy); err != nil {
			b.Fatalf("listing StatefulSets: %v", err)
		}
		if res.allStatefulSets == 0 && len(stsList.Items) >= benchProjections {
			res.allStatefulSets = time.Since(start)
		}
		var list v1alpha1.ProjectionList
		if err := r.watched.List(ctx, &list, client.InNamespace(benchNamespace), client.UnsafeDisableDeepCopy); err != nil {
			b.Fatalf("listing Projections: %v", err)
		}
		observed := 0
		for i := range list.Items {
			if isObserved(&list.Items[i]) {
				observed++
			}
		}
		if observed == benchProjections && res.allStatefulSets != 0 {
			res.allObserved = time.Since(start)
			return res
		}
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			b.Logf("after %s: %d StatefulSets, %d of %d Projections observed", time.Since(start).Round(time.Second),
				len(stsList.Items), observed, benchProjections)
		}
		select {
		case <-r.exited:
			b.Fatalf("the operator exited:\n%s", r.logTail())
		case <-ctx.Done():
			b.Fatalf("after %s: %d StatefulSets, %d of %d Projections observed\n--- operator log (tail) ---\n%s",
				waitTimeout, len(stsList.Items), observed, benchProjections, r.logTail())
		case <-time.After(pollInterval):
		}
	}
}

// statefulSetMetadata is a StatefulSet for a metadata-only watch: the
// bench only counts them.
func statefulSetMetadata() *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"}}
}

// isObserved: the operator has reconciled p's current spec and written a
// status that says how it stands.
func isObserved(p *v1alpha1.Projection) bool {
	return p.Generation > 0 && p.Status.ObservedGeneration == p.Generation &&
		(meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady) != nil ||
			meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionDegraded) != nil)
}

// verify checks that the operator did the work, not only wrote statuses:
// no Projection is Degraded, each has a topology row of one partition, and
// each StatefulSet has one replica.
func (r *run) verify(b *testing.B) {
	b.Helper()
	ctx := context.Background()
	var list v1alpha1.ProjectionList
	if err := r.client.List(ctx, &list, client.InNamespace(benchNamespace)); err != nil {
		b.Fatal(err)
	}
	var degraded []string
	for _, p := range list.Items {
		if meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionDegraded) {
			c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionDegraded)
			degraded = append(degraded, fmt.Sprintf("%s: %s: %s", p.Name, c.Reason, c.Message))
		}
	}
	if len(degraded) > 0 {
		b.Fatalf("%d of %d Projections are Degraded, e.g.:\n%s", len(degraded), len(list.Items),
			strings.Join(degraded[:min(5, len(degraded))], "\n"))
	}

	var stsList appsv1.StatefulSetList
	if err := r.client.List(ctx, &stsList, client.InNamespace(benchNamespace)); err != nil {
		b.Fatal(err)
	}
	for _, sts := range stsList.Items {
		if got := ptr.Deref(sts.Spec.Replicas, 1); got != 1 {
			b.Fatalf("StatefulSet %s has %d replicas, want 1", sts.Name, got)
		}
	}

	conn, err := pgx.Connect(ctx, r.dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	var rows, onePartition int
	err = conn.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE total_partitions = 1) FROM projection_topology").Scan(&rows, &onePartition)
	if err != nil {
		b.Fatalf("counting topology rows: %v", err)
	}
	if rows != benchProjections || onePartition != benchProjections {
		b.Fatalf("projection_topology has %d rows, %d of one partition; want %d of one partition", rows, onePartition, benchProjections)
	}
}

// stop stops the operator (SIGTERM, then SIGKILL after 10 s) and the API
// server. It is safe to call twice.
func (r *run) stop(b *testing.B) {
	b.Helper()
	if r.operator != nil && r.operator.Process != nil {
		select {
		case <-r.exited:
		default:
			_ = r.operator.Process.Signal(syscall.SIGTERM)
			select {
			case <-r.exited:
			case <-time.After(10 * time.Second):
				_ = r.operator.Process.Kill()
				<-r.exited
			}
		}
	}
	if r.stopWatches != nil {
		r.stopWatches()
	}
	if err := r.env.Stop(); err != nil {
		b.Error(err)
	}
}

// logged reports whether the operator's log has a line containing s.
func (r *run) logged(b *testing.B, s string) bool {
	b.Helper()
	data, err := os.ReadFile(r.logPath)
	if err != nil {
		b.Fatal(err)
	}
	return strings.Contains(string(data), s)
}

// logErrors logs how many errors the operator logged, and the first few.
// Errors it recovered from do not fail the benchmark, but they explain a
// slow iteration (each failed reconcile is retried after a backoff).
func (r *run) logErrors(b *testing.B) {
	b.Helper()
	data, err := os.ReadFile(r.logPath)
	if err != nil {
		b.Fatal(err)
	}
	var errs []string
	for _, line := range strings.Split(string(data), "\n") {
		var entry struct{ Level, Msg, Name, Error string }
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Level == "ERROR" {
			errs = append(errs, fmt.Sprintf("%s: %s: %s", entry.Name, entry.Msg, entry.Error))
		}
	}
	if len(errs) > 0 {
		b.Logf("the operator logged %d errors, first:\n%s", len(errs), strings.Join(errs[:min(5, len(errs))], "\n"))
	}
}

// logTail returns the last 40 lines of the operator's log.
func (r *run) logTail() string {
	data, err := os.ReadFile(r.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) { return proctest.FreePort() }

// createBigSecrets creates $BENCH_BIG_SECRETS Secrets of 512 KiB of
// random-looking data in namespace "other".
func createBigSecrets(b *testing.B, c client.Client) {
	b.Helper()
	v := os.Getenv("BENCH_BIG_SECRETS")
	if v == "" {
		return
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		b.Fatalf("$BENCH_BIG_SECRETS %q: want a count", v)
	}
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "other"}}); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 512<<10)
	for i := range data {
		data[i] = byte(i*7919 + i>>8)
	}
	for i := range n {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: fmt.Sprintf("release-%03d", i)},
			Data: map[string][]byte{"release": data}}
		if err := c.Create(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("created %d Secrets of 512 KiB in namespace other ($BENCH_BIG_SECRETS)", n)
}
