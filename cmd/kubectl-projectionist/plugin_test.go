package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/internal/kubetest"
	"github.com/projectionist/projectionist/internal/proctest"
)

// These tests run the commands in-process against a real kube-apiserver
// with the Projection CRD installed, through a kubeconfig file as a user
// would. No operator runs: the tests write the status an operator would,
// through the status subresource.

var (
	env *kubetest.Env
	k8s client.Client
)

func TestMain(m *testing.M) {
	os.Exit(kubetest.RunTests(m, kubetest.Options{}, func(e *kubetest.Env) (func() error, error) {
		env = e
		var err error
		if k8s, err = e.NewClient(clientgoscheme.AddToScheme, v1alpha1.AddToScheme); err != nil {
			return nil, err
		}
		if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}); err != nil {
			return nil, fmt.Errorf("creating namespace shop: %w", err)
		}
		return nil, nil
	}))
}

type result struct {
	code           int
	stdout, stderr string
}

// plugin runs the plugin in-process with args and the test server's
// kubeconfig, with the clock at now when now is not zero.
func plugin(ctx context.Context, now time.Time, args ...string) result {
	var stdout, stderr proctest.SyncBuffer
	return pluginTo(ctx, &stdout, &stderr, now, args...)
}

func pluginTo(ctx context.Context, stdout, stderr *proctest.SyncBuffer, now time.Time, args ...string) result {
	c := newCLI(stdout, stderr)
	if !now.IsZero() {
		c.now = func() time.Time { return now }
	}
	code := c.run(ctx, append(args, "--kubeconfig", env.Kubeconfig))
	return result{code, stdout.String(), stderr.String()}
}

// create creates a Projection and writes status (when not nil) through the
// status subresource, as the operator does.
func create(t *testing.T, namespace, name string, suspend *bool, status *v1alpha1.ProjectionStatus) *v1alpha1.Projection {
	t.Helper()
	ctx := context.Background()
	p := &v1alpha1.Projection{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: v1alpha1.ProjectionSpec{
			Replicas: ptr.To[int32](3),
			Suspend:  suspend,
			Database: v1alpha1.DatabaseSpec{SecretRef: v1alpha1.SecretKeySelector{Name: "db"}},
		},
	}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatalf("creating projection %s: %v", name, err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), p) })
	if status != nil {
		writeStatus(t, p, func(st *v1alpha1.ProjectionStatus) { *st = *status })
	}
	return p
}

// writeStatus changes p's status as the operator would.
func writeStatus(t *testing.T, p *v1alpha1.Projection, mutate func(*v1alpha1.ProjectionStatus)) {
	t.Helper()
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), p); err != nil {
		t.Fatalf("reading projection %s: %v", p.Name, err)
	}
	mutate(&p.Status)
	if err := k8s.Status().Update(context.Background(), p); err != nil {
		t.Fatalf("writing the status of projection %s: %v", p.Name, err)
	}
}

func get(t *testing.T, namespace, name string) *v1alpha1.Projection {
	t.Helper()
	p := &v1alpha1.Projection{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, p); err != nil {
		t.Fatalf("reading projection %s: %v", name, err)
	}
	return p
}

// runningStatus is what the operator reports for three ready partitions
// catching up, with conditions that changed relative to now.
func runningStatus(now time.Time) *v1alpha1.ProjectionStatus {
	at := func(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(-d)) }
	return &v1alpha1.ProjectionStatus{
		Replicas: 3, ReadyReplicas: 3, Partitions: 3, TopologyGeneration: 1, ObservedGeneration: 1,
		HeadPosition: 20000, Lag: 1500, LagSeconds: 42,
		PartitionStatuses: []v1alpha1.PartitionStatus{
			{Partition: 0, Position: 19000, Lag: 1000},
			{Partition: 1, Position: 19990, Lag: 500},
			{Partition: 2, Position: 20000},
		},
		Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonAllReplicasReady, Message: "3 of 3 partitions ready", LastTransitionTime: at(5 * time.Minute), ObservedGeneration: 1},
			{Type: v1alpha1.ConditionProgressing, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonRolledOut, Message: "3 of 3 worker pods exist", LastTransitionTime: at(5 * time.Minute), ObservedGeneration: 1},
			{Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonReconciled, Message: "the database is reachable", LastTransitionTime: at(10 * time.Minute), ObservedGeneration: 1},
			{Type: v1alpha1.ConditionStalled, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonProgressing, Message: "every partition with events to handle has moved its checkpoint recently", LastTransitionTime: at(10 * time.Minute), ObservedGeneration: 1},
			{Type: v1alpha1.ConditionCaughtUp, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonCatchingUp, Message: "1500 events to go", LastTransitionTime: at(10 * time.Minute), ObservedGeneration: 1},
		},
	}
}

func TestStatus(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	create(t, "shop", "user-count", nil, runningStatus(now))

	got := plugin(context.Background(), now, "status", "user-count", "-n", "shop")
	want := `Name:           user-count
Namespace:      shop
Projection:     user-count
Suspended:      false
Replicas:       3 desired, 3 pods, 3 ready
Partitions:     3 (topology generation 1)
Head position:  20000
Lag:            1500 events, oldest 42s
ETA:            unknown (one reading so far: --watch measures the rate over several)

Conditions:
  TYPE         STATUS  REASON             AGE  MESSAGE
  Ready        True    AllReplicasReady   5m   3 of 3 partitions ready
  Progressing  False   RolledOut          5m   3 of 3 worker pods exist
  Degraded     False   Reconciled         10m  the database is reachable
  Stalled      False   CheckpointsMoving  10m  every partition with events to handle has moved its checkpoint recently
  CaughtUp     False   CatchingUp         10m  1500 events to go

Partitions:
    PARTITION  POSITION   LAG
            0     19000  1000
            1     19990   500
            2     20000     0
`
	if got.code != exitOK || got.stderr != "" {
		t.Fatalf("status: exit %d, stderr %q", got.code, got.stderr)
	}
	if diff := cmp.Diff(want, got.stdout); diff != "" {
		t.Errorf("status output (-want +got):\n%s", diff)
	}
}

func TestStatusWatchEstimatesETA(t *testing.T) {
	p := create(t, "default", "revenue", nil, runningStatus(time.Now()))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr proctest.SyncBuffer
	done := make(chan result, 1)
	go func() {
		done <- pluginTo(ctx, &stdout, &stderr, time.Time{}, "status", "revenue", "--watch", "--interval", "300ms")
	}()
	waitOutput(t, &stdout, "unknown (one reading so far")
	writeStatus(t, p, func(st *v1alpha1.ProjectionStatus) { st.Lag = 1400 })
	waitOutput(t, &stdout, "ETA:            about ")
	writeStatus(t, p, func(st *v1alpha1.ProjectionStatus) { st.Lag = 0 })
	waitOutput(t, &stdout, "ETA:            caught up")
	cancel()
	if r := <-done; r.code != exitOK || r.stderr != "" {
		t.Errorf("status --watch: exit %d, stderr %q", r.code, r.stderr)
	}
}

func waitOutput(t *testing.T, out *proctest.SyncBuffer, substr string) {
	t.Helper()
	if err := outputSays(out, substr); err != nil {
		t.Fatal(err)
	}
}

// outputSays waits until out contains substr, for at most 20s (the
// commands poll every second or faster); it is safe to call from any
// goroutine.
func outputSays(out *proctest.SyncBuffer, substr string) error {
	if proctest.Until(20*time.Second, 10*time.Millisecond, proctest.True(func() bool { return strings.Contains(out.String(), substr) })) != nil {
		return fmt.Errorf("no %q in the output:\n%s", substr, out.String())
	}
	return nil
}

// operatorSees waits until cond holds of the Projection namespace/name,
// reading it every 50ms for at most 30s, as an operator would watch it;
// it is safe to call from any goroutine.
func operatorSees(namespace, name, what string, cond func(*v1alpha1.Projection) bool) (*v1alpha1.Projection, error) {
	cur := &v1alpha1.Projection{}
	err := proctest.Until(30*time.Second, 50*time.Millisecond, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, cur); err != nil {
			return err
		}
		if !cond(cur) {
			return fmt.Errorf("projection %s/%s: %s: not yet", namespace, name, what)
		}
		return nil
	})
	return cur, err
}

func TestSuspendResume(t *testing.T) {
	ctx := context.Background()
	create(t, "shop", "orders", nil, nil)

	r := plugin(ctx, time.Time{}, "suspend", "-n", "shop", "orders")
	if r.code != exitOK || r.stdout != "projection \"orders\" in namespace \"shop\" suspended (spec.suspend: true, generation 2)\n" {
		t.Errorf("suspend: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if p := get(t, "shop", "orders"); !ptr.Deref(p.Spec.Suspend, false) {
		t.Errorf("after suspend, spec.suspend is %v; want true", p.Spec.Suspend)
	}
	r = plugin(ctx, time.Time{}, "suspend", "-n", "shop", "orders")
	if r.code != exitOK || r.stdout != "projection \"orders\" in namespace \"shop\" was already suspended (spec.suspend: true)\n" {
		t.Errorf("suspend again: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = plugin(ctx, time.Time{}, "resume", "orders", "--namespace=shop")
	if r.code != exitOK || r.stdout != "projection \"orders\" in namespace \"shop\" resumed (spec.suspend: false, generation 3)\n" {
		t.Errorf("resume: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if p := get(t, "shop", "orders"); p.Spec.Suspend == nil || *p.Spec.Suspend {
		t.Errorf("after resume, spec.suspend is %v; want false", p.Spec.Suspend)
	}
}

// TestSuspendWait plays the operator: once spec.suspend is set it reports
// the pods gone and Ready Suspended for the new generation.
func TestSuspendWait(t *testing.T) {
	p := create(t, "default", "activity-log", nil, runningStatus(time.Now()))
	operator := make(chan struct{})
	go func() {
		defer close(operator)
		cur, err := operatorSees(p.Namespace, p.Name, "spec.suspend", func(cur *v1alpha1.Projection) bool { return ptr.Deref(cur.Spec.Suspend, false) })
		if err != nil {
			t.Errorf("operator: %v", err)
			return
		}
		cur.Status.Replicas, cur.Status.ReadyReplicas, cur.Status.ObservedGeneration = 0, 0, cur.Generation
		cur.Status.Conditions[0] = metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse,
			Reason: v1alpha1.ReasonSuspended, Message: "suspended: 0 worker pods", ObservedGeneration: cur.Generation,
			LastTransitionTime: metav1.Now()}
		if err := k8s.Status().Update(context.Background(), cur); err != nil {
			t.Errorf("operator: %v", err)
		}
	}()
	r := plugin(context.Background(), time.Time{}, "suspend", "activity-log", "--wait", "--timeout", "30s")
	<-operator
	want := "projection \"activity-log\" in namespace \"default\" suspended (spec.suspend: true, generation 2)\n" +
		"projection \"activity-log\" in namespace \"default\" is suspended: Ready False Suspended: suspended: 0 worker pods\n"
	if r.code != exitOK || r.stdout != want {
		t.Errorf("suspend --wait: exit %d, stderr %q, stdout (-want +got):\n%s", r.code, r.stderr, cmp.Diff(want, r.stdout))
	}

	// No operator brings the pods back: resume --wait times out, saying
	// what the status still reports.
	r = plugin(context.Background(), time.Time{}, "resume", "activity-log", "--wait", "--timeout", "2s")
	wantErr := `kubectl projectionist resume: timed out after 2s waiting for projection "activity-log" to be resumed: the operator has not yet reported on generation 3` + "\n"
	if r.code != exitFailure || r.stderr != wantErr {
		t.Errorf("resume --wait without an operator: exit %d, stderr (-want +got):\n%s", r.code, cmp.Diff(wantErr, r.stderr))
	}
}

// TestList lists at a clock of its own: AGE counts from the
// creationTimestamp the API server gave, whole seconds of its clock, so
// the test's "now" is read from the objects, not from the wall clock,
// however long creating them took.
func TestList(t *testing.T) {
	now := time.Now()
	a := create(t, "shop", "list-a", nil, runningStatus(now))
	b := create(t, "default", "list-b", ptr.To(true), &v1alpha1.ProjectionStatus{Partitions: 2, Lag: 7, Conditions: []metav1.Condition{{
		Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonSuspended, Message: "suspended", LastTransitionTime: metav1.Now(),
	}}})
	// later is 2h15s after list-b and at most 2h45s after list-a: both
	// are 120m old.
	if gap := b.CreationTimestamp.Sub(a.CreationTimestamp.Time); gap < 0 || gap >= 30*time.Second {
		t.Fatalf("list-b created %s after list-a: want under 30s, for both to be 120m old", gap)
	}
	later := b.CreationTimestamp.Add(2*time.Hour + 15*time.Second)

	r := plugin(context.Background(), later, "list", "-n", "shop")
	want := `NAME     READY   STATUS             PARTITIONS   LAG    SUSPENDED   AGE
list-a   True    AllReplicasReady   3            1500   false       120m
`
	if r.code != exitOK || r.stdout != want {
		t.Errorf("list -n shop: exit %d, stderr %q, stdout (-want +got):\n%s", r.code, r.stderr, cmp.Diff(want, r.stdout))
	}
	r = plugin(context.Background(), later, "list", "-A")
	want = `NAMESPACE   NAME     READY   STATUS             PARTITIONS   LAG    SUSPENDED   AGE
default     list-b   False   Suspended          2            7      true        120m
shop        list-a   True    AllReplicasReady   3            1500   false       120m
`
	if r.code != exitOK || r.stdout != want {
		t.Errorf("list -A: exit %d, stderr %q, stdout (-want +got):\n%s", r.code, r.stderr, cmp.Diff(want, r.stdout))
	}
	r = plugin(context.Background(), later, "list", "-n", "empty")
	if r.code != exitOK || r.stdout != "" || r.stderr != "No Projections found in namespace \"empty\".\n" {
		t.Errorf("list -n empty: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestErrors(t *testing.T) {
	unreachable := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(unreachable, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantCode   int
		wantStderr string
	}{
		{"not found", []string{"status", "nope"}, nil, exitFailure,
			"kubectl projectionist status: projection \"nope\" not found in namespace \"default\"\n"},
		{"not found in a namespace", []string{"suspend", "nope", "-n", "shop"}, nil, exitFailure,
			"kubectl projectionist suspend: projection \"nope\" not found in namespace \"shop\"\n"},
		{"missing name", []string{"resume"}, nil, exitUsage,
			"kubectl projectionist resume: missing the Projection's NAME\nRun 'kubectl projectionist resume --help' for usage.\n"},
		{"two names", []string{"status", "a", "b"}, nil, exitUsage,
			"kubectl projectionist status: unexpected argument \"b\"\nRun 'kubectl projectionist status --help' for usage.\n"},
		{"unknown flag", []string{"list", "--bogus"}, nil, exitUsage,
			"kubectl projectionist list: unknown flag: --bogus\nRun 'kubectl projectionist list --help' for usage.\n"},
		{"unknown command", []string{"replay", "x"}, nil, exitUsage,
			"kubectl projectionist: unknown command \"replay\"\nRun 'kubectl projectionist --help' for the list of commands.\n"},
		{"no cluster", []string{"status", "x", "--kubeconfig="}, map[string]string{"KUBECONFIG": filepath.Join(t.TempDir(), "none"), "HOME": t.TempDir(), "KUBERNETES_SERVICE_HOST": ""}, exitUsage,
			"kubectl projectionist status: no cluster configured: pass --kubeconfig, set KUBECONFIG, create ~/.kube/config, or run in a pod\nRun 'kubectl projectionist status --help' for usage.\n"},
		{"unreachable", []string{"status", "x", "--kubeconfig", unreachable, "--request-timeout", "5s"}, nil, exitFailure,
			"kubectl projectionist status: cannot reach the Kubernetes API server at https://127.0.0.1:1: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			// The last --kubeconfig wins: the test server's, unless the
			// case names its own.
			var stdout, stderr proctest.SyncBuffer
			c := newCLI(&stdout, &stderr)
			args := tt.args
			if !strings.Contains(strings.Join(args, " "), "--kubeconfig") {
				args = append(args, "--kubeconfig", env.Kubeconfig)
			}
			code := c.run(context.Background(), args)
			if code != tt.wantCode || !strings.HasPrefix(stderr.String(), tt.wantStderr) {
				t.Errorf("exit %d (want %d), stderr:\n%s\nwant it to start with:\n%s", code, tt.wantCode, stderr.String(), tt.wantStderr)
			}
			if stdout.String() != "" {
				t.Errorf("stdout %q; want none", stdout.String())
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help", "status"}, {"status", "-h"}, {"rebuild", "--help"}, {"help", "dead-letters", "retry"}, {"dead-letters", "list", "--help"}, {"suspend", "--help"}, {"resume", "--help"}, {"list", "--help"}} {
		var stdout, stderr proctest.SyncBuffer
		code := newCLI(&stdout, &stderr).run(context.Background(), args)
		if code != exitOK || stderr.String() != "" || !strings.Contains(stdout.String(), "Examples:\n  kubectl projectionist ") || !strings.Contains(stdout.String(), "--kubeconfig") {
			t.Errorf("%v: exit %d, stderr %q, stdout:\n%s", args, code, stderr.String(), stdout.String())
		}
	}
}

// TestRebuild: rebuild sets spec.rebuildToken (a default token from the
// clock, or --token); --wait follows status.rebuild through its phases as
// an operator writes them, succeeds on Rebuilt and fails on Failed; the
// token of a finished rebuild is refused, and a bad token is a usage error.
func TestRebuild(t *testing.T) {
	ctx := context.Background()
	p := create(t, "shop", "revenue", nil, runningStatus(time.Now()))

	now := time.Date(2026, 12, 3, 4, 5, 6, 0, time.UTC)
	r := plugin(ctx, now, "rebuild", "revenue", "-n", "shop")
	if r.code != exitOK || r.stdout != "projection \"revenue\" in namespace \"shop\": rebuild requested (spec.rebuildToken: \"kubectl-20261203T040506Z\")\n" {
		t.Errorf("rebuild: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if got := get(t, "shop", "revenue").Spec.RebuildToken; got != "kubectl-20261203T040506Z" {
		t.Errorf("spec.rebuildToken is %q; want kubectl-20261203T040506Z", got)
	}

	// The operator's part: each phase in turn, then the given end, each
	// once the command (writing to stdout) has printed the one before.
	play := func(stdout *proctest.SyncBuffer, token string, end v1alpha1.RebuildPhase, message string) chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			if _, err := operatorSees("shop", "revenue", "spec.rebuildToken "+token, func(cur *v1alpha1.Projection) bool { return cur.Spec.RebuildToken == token }); err != nil {
				t.Errorf("operator: %v", err)
				return
			}
			for _, b := range []v1alpha1.RebuildStatus{
				{Token: token, Phase: v1alpha1.RebuildStopping, Message: "stopping the worker pods"},
				{Token: token, Phase: v1alpha1.RebuildReplaying, Message: "replaying: 1000 events replayed"},
				{Token: token, Phase: end, Message: message},
			} {
				writeStatus(t, p, func(st *v1alpha1.ProjectionStatus) { st.Rebuild = &b })
				if err := outputSays(stdout, fmt.Sprintf("  %s: %s\n", b.Phase, b.Message)); err != nil {
					t.Errorf("operator: %v", err)
					return
				}
			}
		}()
		return done
	}
	rebuildWaiting := func(token string, end v1alpha1.RebuildPhase, message string) result {
		var stdout, stderr proctest.SyncBuffer
		done := play(&stdout, token, end, message)
		r := pluginTo(ctx, &stdout, &stderr, time.Time{}, "rebuild", "revenue", "-n", "shop", "--token", token, "--wait", "--timeout", "1m")
		<-done
		return r
	}
	r = rebuildWaiting("fix-vat", v1alpha1.RebuildRebuilt, "done: 2000 events replayed")
	var phases []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n")[1:] {
		if _, rest, ok := strings.Cut(line, "  "); ok {
			phases = append(phases, rest)
		}
	}
	want := []string{"Stopping: stopping the worker pods", "Replaying: replaying: 1000 events replayed", "Rebuilt: done: 2000 events replayed"}
	if r.code != exitOK || !cmp.Equal(want, phases[len(phases)-3:]) {
		t.Errorf("rebuild --wait: exit %d, stderr %q, stdout:\n%s\nwant its last lines %q", r.code, r.stderr, r.stdout, want)
	}

	r = plugin(ctx, time.Time{}, "rebuild", "revenue", "-n", "shop", "--token", "fix-vat")
	if r.code != exitFailure || !strings.Contains(r.stderr, `already rebuilt under token "fix-vat" (Rebuilt): give another --token`) {
		t.Errorf("rebuild with a finished token: exit %d, stderr %q", r.code, r.stderr)
	}

	r = rebuildWaiting("no-hook", v1alpha1.RebuildFailed, "projection does not implement projection.Resetter")
	if r.code != exitFailure || !strings.Contains(r.stderr, `rebuild "no-hook" of projection "revenue" failed: projection does not implement projection.Resetter`) {
		t.Errorf("rebuild --wait of a projection without a hook: exit %d, stderr %q", r.code, r.stderr)
	}

	for _, token := range []string{strings.Repeat("x", 64), "tab\there"} {
		r = plugin(ctx, time.Time{}, "rebuild", "revenue", "-n", "shop", "--token", token)
		if r.code != exitUsage {
			t.Errorf("rebuild --token %q: exit %d, stderr %q; want a usage error", token, r.code, r.stderr)
		}
	}
	if got := get(t, "shop", "revenue").Spec.RebuildToken; got != "no-hook" {
		t.Errorf("spec.rebuildToken is %q after refused tokens; want no-hook", got)
	}
}

// TestDeadLetters: list shows status.deadLetterSamples; retry and discard
// set spec.deadLetterAction (ids, or none for --all, replacing earlier
// ids) with a new token each time, and --wait prints the outcome the
// operator reports; bad flags are usage errors.
func TestDeadLetters(t *testing.T) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	st := runningStatus(now)
	st.DeadLetters = 12
	id1, id2 := "0b6f1c2e-5d1a-4f0e-9a57-3c2d1e0f9a8b", "1c7a2d3f-6e2b-4a1f-8b68-4d3e2f1a0b9c"
	st.DeadLetterSamples = []v1alpha1.DeadLetterSample{
		{EventID: id1, Position: 41, Partition: 1, EventType: "OrderPlaced", Aggregate: "Order/o-7",
			FailedAt: ptr.To(metav1.NewTime(now.Add(-90 * time.Second))), Error: "amount_cents missing"},
		{EventID: id2, Position: 57, EventType: "OrderPaid", Aggregate: "Order/o-9", RetryPending: true, Error: "no such order"},
	}
	p := create(t, "shop", "ledger", nil, st)

	r := plugin(ctx, now, "dead-letters", "list", "ledger", "-n", "shop")
	want := `projection "ledger" has 12 dead letters; the oldest 2:
  POSITION  PARTITION  EVENT ID                              TYPE         AGGREGATE  FAILED   RETRY    ERROR
  41        1          0b6f1c2e-5d1a-4f0e-9a57-3c2d1e0f9a8b  OrderPlaced  Order/o-7  90s ago  -        amount_cents missing
  57        0          1c7a2d3f-6e2b-4a1f-8b68-4d3e2f1a0b9c  OrderPaid    Order/o-9           pending  no such order
`
	if r.code != exitOK || r.stdout != want {
		t.Errorf("dead-letters list: exit %d, stderr %q, stdout (-want +got):\n%s", r.code, r.stderr, cmp.Diff(want, r.stdout))
	}

	r = plugin(ctx, now, "dead-letters", "retry", "ledger", "-n", "shop", "--id", id1, "--id", id2)
	if r.code != exitOK || !strings.Contains(r.stdout, `Retry of 2 dead letters requested`) {
		t.Errorf("dead-letters retry --id: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	first := get(t, "shop", "ledger").Spec.DeadLetterAction
	if first == nil || first.Action != v1alpha1.DeadLetterRetry || !cmp.Equal(first.EventIDs, []string{id1, id2}) || first.Token == "" {
		t.Fatalf("spec.deadLetterAction after retry --id: %+v", first)
	}

	// The operator's part, for the discard to come.
	operator := make(chan struct{})
	go func() {
		defer close(operator)
		cur, err := operatorSees("shop", "ledger", "a discard", func(cur *v1alpha1.Projection) bool {
			a := cur.Spec.DeadLetterAction
			return a != nil && a.Action == v1alpha1.DeadLetterDiscard
		})
		if err != nil {
			t.Errorf("operator: %v", err)
			return
		}
		a := cur.Spec.DeadLetterAction
		writeStatus(t, p, func(st *v1alpha1.ProjectionStatus) {
			st.DeadLetterAction = &v1alpha1.DeadLetterActionStatus{Token: a.Token, Action: a.Action, DeadLetters: 12,
				Message: "discarded 12 dead letters of projection ledger (every dead letter)"}
		})
	}()
	r = plugin(ctx, now.Add(time.Second), "dead-letters", "discard", "ledger", "-n", "shop", "--all", "--wait", "--timeout", "30s")
	<-operator
	if r.code != exitOK || !strings.HasSuffix(r.stdout, "done: discarded 12 dead letters of projection ledger (every dead letter)\n") {
		t.Errorf("dead-letters discard --all --wait: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	second := get(t, "shop", "ledger").Spec.DeadLetterAction
	if second == nil || second.Action != v1alpha1.DeadLetterDiscard || len(second.EventIDs) != 0 || second.Token == first.Token {
		t.Errorf("spec.deadLetterAction after discard --all: %+v; want a new token and no ids", second)
	}

	for _, args := range [][]string{
		{"dead-letters", "retry", "ledger"},
		{"dead-letters", "retry", "ledger", "--all", "--id", id1},
		{"dead-letters", "discard", "ledger", "--id", "nope"},
	} {
		if r := plugin(ctx, now, args...); r.code != exitUsage {
			t.Errorf("%v: exit %d, stderr %q; want a usage error", args, r.code, r.stderr)
		}
	}
	if r := plugin(ctx, now, "dead-letters", "list", "nope", "-n", "shop"); r.code != exitFailure ||
		r.stderr != "kubectl projectionist dead-letters list: projection \"nope\" not found in namespace \"shop\"\n" {
		t.Errorf("dead-letters list of a missing Projection: exit %d, stderr %q", r.code, r.stderr)
	}
}
