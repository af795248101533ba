package kubetest

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// clusterBinaries are needed beside kube-apiserver and etcd for Options.Cluster.
var clusterBinaries = []string{"kube-controller-manager", "kube-scheduler", "kwok"}

// controllers are the kube-controller-manager controllers the mini cluster
// runs: StatefulSets get pods; the node lifecycle controller watches the
// node's Lease as in a real cluster (taints the node and marks its pods not
// ready should kwok stop renewing it, lifts not-ready taints once it is Ready);
// the garbage collector and the namespace controller delete owned objects and
// namespace contents as a real cluster does. Pods need no ServiceAccount
// controllers: envtest disables the ServiceAccount admission plugin.
var controllers = []string{
	"statefulset-controller",
	"node-lifecycle-controller",
	"garbage-collector-controller",
	"namespace-controller",
}

// kwokNodeAnnotation marks the nodes kwok manages
// (--manage-nodes-with-annotation-selector).
const kwokNodeAnnotation = "kwok.x-k8s.io/node"

//go:embed kwok-stages.yaml
var kwokStages []byte

// startCluster starts kube-controller-manager, kube-scheduler and kwok against
// the API server, creates the fake node and waits until the components are
// healthy and the node is Ready and schedulable.
func (e *Env) startCluster(ctx context.Context, assets string) error {
	var mu sync.Mutex // guards e.procs while the components start in parallel
	track := func(p *process) {
		mu.Lock()
		defer mu.Unlock()
		e.procs = append(e.procs, p)
	}

	kwokConfig := filepath.Join(e.dir, "kwok.yaml")
	if err := os.WriteFile(kwokConfig, kwokStages, 0o600); err != nil {
		return fmt.Errorf("kubetest: writing kwok config: %w", err)
	}
	kwokHome := filepath.Join(e.dir, "kwok-home")
	if err := os.Mkdir(kwokHome, 0o700); err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	kwok, err := startProcess(e.dir, "kwok",
		// kwok also loads ~/.kwok/kwok.yaml when it exists; a HOME of its own
		// keeps a developer's configuration out of the tests.
		[]string{"HOME=" + kwokHome},
		filepath.Join(assets, "kwok"),
		"--kubeconfig="+e.Kubeconfig,
		"--config="+kwokConfig,
		"--manage-nodes-with-annotation-selector="+kwokNodeAnnotation+"=fake",
		// Renew a Lease for the node, as a kubelet does, so that the node
		// lifecycle controller keeps the node Ready however long a test runs.
		"--node-lease-duration-seconds=40",
	)
	if err != nil {
		return err
	}
	track(kwok)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return e.startComponent(gctx, track, "kube-controller-manager", filepath.Join(assets, "kube-controller-manager"), "/healthz",
			func(port int, certDir string) []string {
				return append(e.componentArgs(port, certDir),
					"--controllers="+strings.Join(controllers, ","),
					"--use-service-account-credentials=false",
				)
			})
	})
	g.Go(func() error {
		return e.startComponent(gctx, track, "kube-scheduler", filepath.Join(assets, "kube-scheduler"), "/readyz",
			e.componentArgs)
	})
	g.Go(func() error {
		client, err := kubernetes.NewForConfig(e.Config)
		if err != nil {
			return fmt.Errorf("kubetest: %w", err)
		}
		if _, err := client.CoreV1().Nodes().Create(gctx, fakeNode(), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("kubetest: creating node %s: %w", NodeName, err)
		}
		return waitNodeReady(gctx, client, kwok)
	})
	return g.Wait()
}

// componentArgs are the flags kube-controller-manager and kube-scheduler share.
func (e *Env) componentArgs(port int, certDir string) []string {
	return []string{
		// No --authentication-kubeconfig: it makes the component wait for a
		// request-header CA that envtest's API server does not configure
		// before it serves at all. Only the health endpoints are used, and
		// they are always allowed.
		"--kubeconfig=" + e.Kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + certDir,
	}
}

// startComponent starts a component serving HTTPS on a free port and waits
// until healthPath answers 200. When another process took the port first, it
// tries again with another one.
func (e *Env) startComponent(ctx context.Context, track func(*process), name, path, healthPath string, args func(port int, certDir string) []string) error {
	const attempts = 3
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		certDir := filepath.Join(e.dir, name+"-certs")
		p, err := startProcess(e.dir, name, nil, path, args(port, certDir)...)
		if err != nil {
			return err
		}
		track(p)
		err = waitHealthy(ctx, p, port, healthPath)
		if err == nil {
			return nil
		}
		if attempt < attempts && p.exited() && strings.Contains(tailFile(p.logPath), "address already in use") {
			continue
		}
		return err
	}
}

// waitHealthy polls https://127.0.0.1:port<healthPath> until it answers 200.
func waitHealthy(ctx context.Context, p *process, port int, healthPath string) error {
	client := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			// The component serves a self-signed certificate it generated at
			// start; this only asks a process we started on loopback whether
			// it is up.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above: our own process, on loopback
		},
	}
	defer client.CloseIdleConnections()
	url := fmt.Sprintf("https://127.0.0.1:%d%s", port, healthPath)
	var last string
	err := poll(ctx, p, func() bool {
		resp, err := client.Get(url)
		if err != nil {
			last = err.Error()
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		last = fmt.Sprintf("%s: %s", resp.Status, body)
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		return fmt.Errorf("%w (waiting for %s; last answer: %s)", err, url, last)
	}
	return nil
}

// fakeNode is the Node kwok manages: no taints of its own, so every pod may
// land on it; kwok fills in its status (capacity, conditions).
func fakeNode() *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: NodeName,
			Labels: map[string]string{
				"kubernetes.io/hostname": NodeName,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"type":                   "kwok",
			},
			Annotations: map[string]string{
				kwokNodeAnnotation:             "fake",
				"node.alpha.kubernetes.io/ttl": "0",
			},
		},
	}
}

// waitNodeReady waits until the fake node is Ready and carries none of the
// taints that keep pods off a node that is not.
func waitNodeReady(ctx context.Context, client kubernetes.Interface, kwok *process) error {
	var last string
	err := poll(ctx, kwok, func() bool {
		node, err := client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false
		}
		ready := false
		last = "no Ready condition"
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				ready = c.Status == corev1.ConditionTrue
				last = fmt.Sprintf("Ready=%s (%s: %s)", c.Status, c.Reason, c.Message)
			}
		}
		if !ready {
			return false
		}
		for _, t := range node.Spec.Taints {
			if t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable {
				last = "still tainted " + t.ToString()
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("%w (waiting for node %s to be Ready: %s)", err, NodeName, last)
	}
	return nil
}

// poll calls done every 100ms until it returns true. It fails when p exits
// first (with the tail of p's log) or ctx ends.
func poll(ctx context.Context, p *process, done func() bool) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if done() {
			return nil
		}
		select {
		case <-tick.C:
		case <-p.done:
			return p.exitError()
		case <-ctx.Done():
			err := ctx.Err()
			if errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("kubetest: %s not ready after %s", p.name, startTimeout)
			}
			return fmt.Errorf("%w\n--- %s (tail) ---\n%s", err, p.logPath, tailFile(p.logPath))
		}
	}
}
