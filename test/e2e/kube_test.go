//go:build e2e

package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// newClient is a client of the cluster KUBECONFIG names, for observing it;
// the test changes the cluster through kubectl and helm, as a user does.
func newClient(t *testing.T) client.Client {
	t.Helper()
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		t.Fatalf("loading KUBECONFIG: %v", err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(rc, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("creating a client: %v", err)
	}
	return c
}

// run runs a tool with stdin (may be nil) and returns its combined output.
func run(ctx context.Context, stdin []byte, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// kubectl runs kubectl and fails the test if it fails.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	return kubectlIn(t, nil, args...)
}

// kubectlIn is kubectl with stdin, e.g. `apply -f -`.
func kubectlIn(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	return mustRun(t, 3*time.Minute, stdin, cfg.kubectl, args...)
}

// helm runs bin/helm and fails the test if it fails.
func helm(t *testing.T, args ...string) string {
	t.Helper()
	return mustRun(t, 10*time.Minute, nil, cfg.helm, args...)
}

// mustRun runs name with stdin and args within timeout and returns its
// output, failing the test if it fails.
func mustRun(t *testing.T, timeout time.Duration, stdin []byte, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := run(ctx, stdin, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// eventually polls check every 500ms until it returns nil and returns how
// long that took; after timeout it fails the test with check's last error.
func eventually(t *testing.T, what string, timeout time.Duration, check func(ctx context.Context) error) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := check(ctx)
		cancel()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not so after %s: %v", what, timeout, err)
		}
		time.Sleep(500 * time.Millisecond) // polls a real cluster
	}
}

// workerPods are a Projection's pods by name.
func workerPods(ctx context.Context, c client.Client, ns, projection string) (map[string]corev1.Pod, error) {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"projectionist.dev/projection": projection}); err != nil {
		return nil, err
	}
	m := make(map[string]corev1.Pod, len(pods.Items))
	for _, p := range pods.Items {
		m[p.Name] = p
	}
	return m, nil
}

// podReady says whether a pod is Running, Ready and not being deleted.
func podReady(p *corev1.Pod) error {
	if p.DeletionTimestamp != nil {
		return fmt.Errorf("pod %s is being deleted", p.Name)
	}
	if p.Status.Phase != corev1.PodRunning {
		return fmt.Errorf("pod %s is %s", p.Name, p.Status.Phase)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			if c.Status != corev1.ConditionTrue {
				return fmt.Errorf("pod %s is not ready: %s %s", p.Name, c.Reason, c.Message)
			}
			return nil
		}
	}
	return fmt.Errorf("pod %s has no Ready condition yet", p.Name)
}

// restarts is the sum of a pod's container restart counts.
func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, s := range p.Status.ContainerStatuses {
		n += s.RestartCount
	}
	return n
}

// exactlyPodsReady checks that a Projection has exactly the pods
// name-0..name-(n-1), each Running and Ready.
func exactlyPodsReady(ctx context.Context, c client.Client, ns, name string, n int) (map[string]corev1.Pod, error) {
	pods, err := workerPods(ctx, c, ns, name)
	if err != nil {
		return nil, err
	}
	if len(pods) != n {
		return nil, fmt.Errorf("%d pods, want %d (%s)", len(pods), n, podNames(pods))
	}
	for i := range n {
		p, ok := pods[fmt.Sprintf("%s-%d", name, i)]
		if !ok {
			return nil, fmt.Errorf("no pod %s-%d (%s)", name, i, podNames(pods))
		}
		if err := podReady(&p); err != nil {
			return nil, err
		}
	}
	return pods, nil
}

func podNames(pods map[string]corev1.Pod) string {
	var names []string
	for n := range pods {
		names = append(names, n)
	}
	return strings.Join(names, ", ")
}

// getProjection reads a Projection.
func getProjection(ctx context.Context, c client.Client, ns, name string) (*v1alpha1.Projection, error) {
	var p v1alpha1.Projection
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// projectionSettled checks a Projection's status: observed, n partitions in
// the database, n ready replicas, Ready, not Degraded, lag 0, computed
// after the log's head reached minHead (so a status written before the
// last events arrived does not count).
func projectionSettled(ctx context.Context, c client.Client, ns, name string, n int32, minHead int64) error {
	p, err := getProjection(ctx, c, ns, name)
	if err != nil {
		return err
	}
	s := p.Status
	switch {
	case s.ObservedGeneration != p.Generation:
		return fmt.Errorf("status.observedGeneration %d, metadata.generation %d", s.ObservedGeneration, p.Generation)
	case s.Partitions != n:
		return fmt.Errorf("status.partitions %d, want %d", s.Partitions, n)
	case s.Replicas != n || s.ReadyReplicas != n:
		return fmt.Errorf("status.replicas %d, readyReplicas %d, want %d", s.Replicas, s.ReadyReplicas, n)
	case !meta.IsStatusConditionTrue(s.Conditions, v1alpha1.ConditionReady):
		return fmt.Errorf("not Ready: %s", conditionString(s.Conditions, v1alpha1.ConditionReady))
	case meta.IsStatusConditionTrue(s.Conditions, v1alpha1.ConditionDegraded):
		return fmt.Errorf("Degraded: %s", conditionString(s.Conditions, v1alpha1.ConditionDegraded))
	case s.HeadPosition < minHead:
		return fmt.Errorf("status.headPosition %d, the log's head is at %d: status not refreshed yet", s.HeadPosition, minHead)
	case len(s.PartitionStatuses) != int(n):
		return fmt.Errorf("status.partitionStatuses has %d partitions, want %d", len(s.PartitionStatuses), n)
	case s.Lag != 0:
		return fmt.Errorf("status.lag %d (head %d, partitions %+v)", s.Lag, s.HeadPosition, s.PartitionStatuses)
	}
	return nil
}

func conditionString(conds []metav1.Condition, typ string) string {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return typ + " condition absent"
	}
	return fmt.Sprintf("%s=%s reason %s: %s", c.Type, c.Status, c.Reason, c.Message)
}

// statefulSet reads a StatefulSet.
func statefulSet(ctx context.Context, c client.Client, ns, name string) (*appsv1.StatefulSet, error) {
	var s appsv1.StatefulSet
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// gone checks that an object does not exist.
func gone(ctx context.Context, c client.Client, obj client.Object, key client.ObjectKey) error {
	err := c.Get(ctx, key, obj)
	switch {
	case err == nil:
		return fmt.Errorf("%T %s still exists", obj, key)
	case apierrors.IsNotFound(err):
		return nil
	}
	return err
}

// getTable runs `kubectl get` and splits its table into rows of cells (the
// header first), cut at the header's column offsets so that an empty cell
// stays an empty string.
func getTable(t *testing.T, args ...string) [][]string {
	t.Helper()
	out := kubectl(t, append([]string{"get"}, args...)...)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) == "" {
		t.Fatalf("kubectl get %s: no output", strings.Join(args, " "))
	}
	var starts []int
	header := lines[0]
	for i := range len(header) {
		if header[i] != ' ' && (i == 0 || header[i-1] == ' ') {
			starts = append(starts, i)
		}
	}
	var rows [][]string
	for _, line := range lines {
		row := make([]string, len(starts))
		for j, from := range starts {
			to := len(line)
			if j+1 < len(starts) && starts[j+1] < to {
				to = starts[j+1]
			}
			if from < to {
				row[j] = strings.TrimSpace(line[from:to])
			}
		}
		rows = append(rows, row)
	}
	return rows
}
