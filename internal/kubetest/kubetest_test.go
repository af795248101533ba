package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/projectionist/projectionist/internal/proctest"
)

// testCRDs is a directory of our own with a trivial CRD: these tests must not
// depend on the project's generated CRDs (the default, config/crd/bases).
var testCRDs = []string{"testdata/crd"}

func startEnv(t *testing.T, opts Options) (*Env, *kubernetes.Clientset) {
	t.Helper()
	began := time.Now()
	env, err := Start(opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("Start(Cluster=%v) took %s", opts.Cluster, time.Since(began).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	client, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return env, client
}

// eventually calls check until it returns nil, failing the test with check's
// last error after timeout.
func eventually(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	proctest.Eventually(t, timeout, 200*time.Millisecond, "the check", check)
}

func TestStartAPIServer(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env, client := startEnv(t, Options{CRDDirectories: testCRDs})

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubetest"}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: "kubetest"},
		Data:       map[string]string{"batchSize": "100"},
	}
	if _, err := client.CoreV1().ConfigMaps("kubetest").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating ConfigMap: %v", err)
	}
	if _, err := client.CoreV1().Namespaces().Get(ctx, "kubetest", metav1.GetOptions{}); err != nil {
		t.Fatalf("reading namespace back: %v", err)
	}
	got, err := client.CoreV1().ConfigMaps("kubetest").Get(ctx, "settings", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading ConfigMap back: %v", err)
	}
	if got.Data["batchSize"] != "100" {
		t.Errorf("ConfigMap data = %v, want batchSize=100", got.Data)
	}

	out, err := env.Kubectl(ctx, "version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Server Version: "+KubeVersion) {
		t.Errorf("kubectl version printed %q, want the server at %s", out, KubeVersion)
	}

	// The CRD of Options.CRDDirectories is installed and served.
	out, err = env.Kubectl(ctx, "get", "widgets", "-n", "kubetest", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "" && !strings.Contains(out, "No resources") {
		t.Errorf("kubectl get widgets printed %q, want no widgets", out)
	}

	// The kubeconfig file serves the component processes and the user too.
	out, err = env.Kubectl(ctx, "get", "configmap", "settings", "-n", "kubetest", "-o", "jsonpath={.data.batchSize}")
	if err != nil {
		t.Fatal(err)
	}
	if out != "100" {
		t.Errorf("kubectl get configmap printed %q, want 100", out)
	}

	// A failing command reports its output.
	_, err = env.Kubectl(ctx, "get", "configmap", "missing", "-n", "kubetest")
	if err == nil || !strings.Contains(err.Error(), "NotFound") && !strings.Contains(err.Error(), "not found") {
		t.Errorf("kubectl get of a missing ConfigMap: err = %v, want one quoting kubectl's not found", err)
	}

	// The API server counted the two creates above.
	counts, err := RequestCounts(ctx, env.Config)
	if err != nil {
		t.Fatal(err)
	}
	if counts["POST configmaps"] < 1 || counts["POST namespaces"] < 1 {
		t.Errorf("RequestCounts: POST configmaps %v, POST namespaces %v, want at least 1 each", counts["POST configmaps"], counts["POST namespaces"])
	}

	// Stop removes the temp dir and is safe to call twice.
	if err := env.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := env.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(env.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s still there after Stop (stat: %v)", env.dir, err)
	}
}

func TestStartMissingCRDDirectory(t *testing.T) {
	t.Parallel()
	env, err := Start(Options{CRDDirectories: []string{"testdata/no-such-dir"}})
	if err == nil {
		_ = env.Stop()
		t.Fatal("Start with a missing CRD directory succeeded, want an error")
	}
	if !strings.Contains(err.Error(), "no-such-dir") {
		t.Errorf("error %q does not name the missing directory", err)
	}
}

func TestStartCluster(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env, client := startEnv(t, Options{CRDDirectories: testCRDs, Cluster: true})

	const ns = "workers"
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	labels := map[string]string{"app": "worker"}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "worker", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            new(int32(2)),
			PodManagementPolicy: appsv1.ParallelPodManagement,
			ServiceName:         "worker",
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "worker", Image: "example.invalid/worker:1"}},
				},
			},
		},
	}
	began := time.Now()
	if _, err := client.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating StatefulSet: %v", err)
	}
	eventually(t, 60*time.Second, func() error { return readyOnFakeNode(ctx, client, ns, 2) })
	t.Logf("2 pods Ready after %s", time.Since(began).Round(time.Millisecond))

	began = time.Now()
	scale := &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: "worker", Namespace: ns},
		Spec:       autoscalingv1.ScaleSpec{Replicas: 3},
	}
	if _, err := client.AppsV1().StatefulSets(ns).UpdateScale(ctx, "worker", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("scaling StatefulSet to 3: %v", err)
	}
	eventually(t, 60*time.Second, func() error { return readyOnFakeNode(ctx, client, ns, 3) })
	t.Logf("3 pods Ready after %s", time.Since(began).Round(time.Millisecond))

	out, err := env.Kubectl(ctx, "get", "pods", "-n", ns, "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl get pods:\n%s", out)

	// Stop leaves no component running.
	procs := env.procs
	if len(procs) != 3 {
		t.Errorf("Start(Cluster) tracks %d processes, want kwok, kube-controller-manager and kube-scheduler", len(procs))
	}
	if err := env.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for _, p := range procs {
		if err := syscall.Kill(p.cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still running after Stop: kill -0 = %v", p.name, p.cmd.Process.Pid, err)
		}
	}
}

// readyOnFakeNode checks that the StatefulSet "worker" in ns reports want
// ready replicas and that its want pods are Running, Ready and bound to the
// fake node.
func readyOnFakeNode(ctx context.Context, client kubernetes.Interface, ns string, want int32) error {
	sts, err := client.AppsV1().StatefulSets(ns).Get(ctx, "worker", metav1.GetOptions{})
	if err != nil {
		return err
	}
	if sts.Status.ReadyReplicas != want {
		return fmt.Errorf("status.readyReplicas = %d, want %d", sts.Status.ReadyReplicas, want)
	}
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=worker"})
	if err != nil {
		return err
	}
	if int32(len(pods.Items)) != want {
		return fmt.Errorf("%d pods, want %d", len(pods.Items), want)
	}
	for _, pod := range pods.Items {
		if pod.Spec.NodeName != NodeName {
			return fmt.Errorf("pod %s on node %q, want %s", pod.Name, pod.Spec.NodeName, NodeName)
		}
		if pod.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("pod %s phase %s, want Running", pod.Name, pod.Status.Phase)
		}
		ready := false
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			return fmt.Errorf("pod %s not Ready: %+v", pod.Name, pod.Status.Conditions)
		}
	}
	return nil
}
