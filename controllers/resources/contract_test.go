package resources_test

// The operator-to-worker contract, end to end without a cluster: the
// container the StatefulSet builder produces for a Projection with a user's
// image, started the way the kubelet starts it (the image's entrypoint with
// the container's args; env resolved from the downward API and the Secret),
// with the user's worker.Main binary as the image's entrypoint, against a
// real PostgreSQL.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/utils/ptr"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers/resources"
	"github.com/projectionist/projectionist/internal/loadgen"
	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/internal/proctest"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/worker"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// customImage stands for the user's image; the test runs the binary that
// image would hold.
const customImage = "registry.example.com/acme/custom-worker:1.0.0"

func TestContractRunsCustomWorker(t *testing.T) {
	entrypoint := buildCustomWorker(t)
	dsn := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool := pgtest.OpenPool(t, dsn)
	if _, err := projection.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}

	p := &v1alpha1.Projection{
		ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "shop", UID: "0f6c0b9e-4a43-4c1e-9a53-0d7b6f1e2a10"},
		Spec: v1alpha1.ProjectionSpec{
			ProjectionName: "order_ledger",
			BatchSize:      ptr.To[int32](50),
			PollInterval:   &metav1.Duration{Duration: 20 * time.Millisecond},
			Database:       v1alpha1.DatabaseSpec{SecretRef: v1alpha1.SecretKeySelector{Name: "shop-db"}},
			Image:          customImage,
			Env:            []corev1.EnvVar{{Name: "PGAPPNAME", Value: "custom-$(POD_NAME)"}},
		},
	}
	secrets := map[string]map[string]string{"shop-db": {resources.DefaultSecretKey: dsn}}

	// What the operator does before it applies the StatefulSet: switch the
	// topology to the replica count.
	if _, err := projection.SetTopology(ctx, pool, "order_ledger", 2); err != nil {
		t.Fatal(err)
	}
	sts, err := resources.StatefulSet(p, 2, resources.Options{WorkerImage: "docker.io/projectionist/projectionist:stock"})
	if err != nil {
		t.Fatal(err)
	}
	c := sts.Spec.Template.Spec.Containers[0]
	if *c.Image != customImage {
		t.Fatalf("container image = %q, want spec.image %q", *c.Image, customImage)
	}
	if len(c.Command) != 0 {
		t.Fatalf("container command = %q: the operator must run the image's own entrypoint", c.Command)
	}

	pods := map[int]*pod{}
	for ordinal := range 2 {
		pods[ordinal] = startPod(t, entrypoint, &c, p.Name, ordinal, secrets)
	}
	for _, pd := range pods {
		pd.waitReady(t)
	}
	res := generate(t, ctx, pool, 600)
	waitLedger(t, ctx, pool, res)

	// A rescale while the pods run: they follow the new topology without a
	// restart, and the new pod takes its share.
	if _, err := projection.SetTopology(ctx, pool, "order_ledger", 3); err != nil {
		t.Fatal(err)
	}
	pods[2] = startPod(t, entrypoint, &c, p.Name, 2, secrets)
	pods[2].waitReady(t)
	res2 := generate(t, ctx, pool, 600)
	waitLedger(t, ctx, pool, loadgen.Result{
		ByType:      map[string]int{"OrderPlaced": res.ByType["OrderPlaced"] + res2.ByType["OrderPlaced"]},
		AmountCents: res.AmountCents + res2.AmountCents,
	})
	for ordinal, pd := range pods {
		if pd.exited() {
			t.Fatalf("pod %d exited:\n%s", ordinal, pd.out.String())
		}
		// Only the projection PROJECTION names runs.
		if strings.Contains(pd.out.String(), `"customer_directory"`) {
			t.Errorf("pod %d ran customer_directory, which PROJECTION did not name:\n%s", ordinal, pd.out.String())
		}
	}
	var directory int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM projection_checkpoints WHERE projection_name = 'customer_directory'").Scan(&directory); err != nil {
		t.Fatal(err)
	}
	if directory != 0 {
		t.Errorf("customer_directory has %d checkpoints; PROJECTION named only order_ledger", directory)
	}
}

// buildCustomWorker builds examples/custom-worker, a module of its own, as
// the user's image would hold it.
func buildCustomWorker(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "examples", "custom-worker")
	out := filepath.Join(t.TempDir(), "custom-worker")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building examples/custom-worker: %v\n%s", err, b)
	}
	return out
}

// pod is a worker process started as the kubelet would start the container.
type pod struct {
	name, readyURL string
	cmd            *exec.Cmd
	out            *proctest.SyncBuffer
	done           chan struct{}
}

// startPod starts the container c of StatefulSet pod <set>-<ordinal>: the
// image's entrypoint with c's args and the environment the kubelet would
// give it. The one change is the HTTP port: each pod has a network
// namespace of its own, these processes share the host's, so each listens
// on a free port of its own in place of c's container port.
func startPod(t *testing.T, entrypoint string, c *corev1ac.ContainerApplyConfiguration, set string, ordinal int, secrets map[string]map[string]string) *pod {
	t.Helper()
	name := fmt.Sprintf("%s-%d", set, ordinal)
	env := kubeletEnv(t, c.Env, name, ordinal, secrets)
	if want := ":" + strconv.Itoa(worker.Port); env[worker.EnvHTTPAddr] != want {
		t.Fatalf("%s = %q, want %q", worker.EnvHTTPAddr, env[worker.EnvHTTPAddr], want)
	}
	if *c.Ports[0].ContainerPort != worker.Port {
		t.Fatalf("container port = %d, want %d", *c.Ports[0].ContainerPort, worker.Port)
	}
	port := freePort(t)
	env[worker.EnvHTTPAddr] = "127.0.0.1:" + strconv.Itoa(port)

	cmd := exec.Command(entrypoint, c.Args...)
	cmd.Env = []string{"HOSTNAME=" + name}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	pd := &pod{name: name, cmd: cmd, out: &proctest.SyncBuffer{}, done: make(chan struct{}),
		readyURL: fmt.Sprintf("http://127.0.0.1:%d%s", port, *c.ReadinessProbe.HTTPGet.Path)}
	cmd.Stdout, cmd.Stderr = pd.out, pd.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(pd.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-pd.done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-pd.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, pd.out.String())
		}
	})
	return pd
}

func (pd *pod) exited() bool {
	select {
	case <-pd.done:
		return true
	default:
		return false
	}
}

// waitReady polls the container's readiness probe path until it answers 200.
func (pd *pod) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if pd.exited() {
			t.Fatalf("%s exited (%v) before it was ready:\n%s", pd.name, pd.cmd.ProcessState, pd.out.String())
		}
		resp, err := http.Get(pd.readyURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after a minute (last: %v):\n%s", pd.name, err, pd.out.String())
		}
		time.Sleep(50 * time.Millisecond) // polls a child process, up to the deadline above
	}
}

// varRef is a $(NAME) reference in an env value, which the kubelet expands
// from the variables before it.
var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// kubeletEnv resolves env as the kubelet does for pod name of a
// StatefulSet: literal values (with $(VAR) references to earlier
// variables expanded), Secret keys, and the downward API fields the
// builder uses. Anything else fails the test, so that a builder change
// the kubelet would resolve differently cannot pass unnoticed.
func kubeletEnv(t *testing.T, env []corev1ac.EnvVarApplyConfiguration, name string, ordinal int, secrets map[string]map[string]string) map[string]string {
	t.Helper()
	fields := map[string]string{
		"metadata.name": name,
		"metadata.labels['" + appsv1.PodIndexLabel + "']": strconv.Itoa(ordinal),
	}
	out := map[string]string{}
	for _, e := range env {
		switch {
		case e.ValueFrom == nil:
			v := ptr.Deref(e.Value, "")
			out[*e.Name] = varRef.ReplaceAllStringFunc(v, func(ref string) string {
				if val, ok := out[ref[2:len(ref)-1]]; ok {
					return val
				}
				return ref // the kubelet leaves unknown references as they are
			})
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := secrets[*ref.Name][*ref.Key]
			if !ok {
				t.Fatalf("env %s: Secret %q has no key %q", *e.Name, *ref.Name, *ref.Key)
			}
			out[*e.Name] = v
		case e.ValueFrom.FieldRef != nil:
			v, ok := fields[*e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Fatalf("env %s: field %q is not one this test resolves", *e.Name, *e.ValueFrom.FieldRef.FieldPath)
			}
			out[*e.Name] = v
		default:
			t.Fatalf("env %s: a source this test does not resolve", *e.Name)
		}
	}
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	port, err := proctest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// generate appends n demo events (users and orders).
func generate(t *testing.T, ctx context.Context, pool *pgxpool.Pool, n int) loadgen.Result {
	t.Helper()
	res, err := loadgen.Generate(ctx, pool, loadgen.Options{Count: n, Aggregates: 50, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// waitLedger waits until order_ledger holds exactly one row per OrderPlaced
// event with the amounts' sum.
func waitLedger(t *testing.T, ctx context.Context, pool *pgxpool.Pool, want loadgen.Result) {
	t.Helper()
	var rows, cents int64
	deadline := time.Now().Add(time.Minute)
	for {
		err := pool.QueryRow(ctx, "SELECT count(*), coalesce(sum(amount_cents), 0) FROM order_ledger").Scan(&rows, &cents)
		if err == nil && rows == int64(want.ByType["OrderPlaced"]) && cents == want.AmountCents {
			return
		}
		if err == nil && rows > int64(want.ByType["OrderPlaced"]) {
			t.Fatalf("order_ledger has %d rows for %d OrderPlaced events", rows, want.ByType["OrderPlaced"])
		}
		if time.Now().After(deadline) {
			t.Fatalf("order_ledger: %d rows, %d cents after a minute; want %d rows, %d cents (last error: %v)",
				rows, cents, want.ByType["OrderPlaced"], want.AmountCents, err)
		}
		time.Sleep(50 * time.Millisecond) // polls a child process, up to the deadline above
	}
}
