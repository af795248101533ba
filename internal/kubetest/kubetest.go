// Package kubetest starts a real Kubernetes API server (envtest: kube-apiserver
// and etcd) for tests, and optionally a mini cluster beside it:
// kube-controller-manager, kube-scheduler and kwok faking one node, so that
// StatefulSet pods are really created, scheduled, and become Running and Ready.
//
// The binaries come from AssetsDir: $KUBEBUILDER_ASSETS, or
// bin/k8s/<KubeVersion> in the repository, built by `make envtest-assets`.
// Missing binaries are an error, never a skipped test.
package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// KubeVersion is the Kubernetes version of the default binaries in
// bin/k8s/<KubeVersion>; it matches KUBE_VERSION in the Makefile.
const KubeVersion = "v1.37.1"

// NodeName is the name of the fake node that kwok manages when
// Options.Cluster is set.
const NodeName = "kwok-node-0"

// startTimeout bounds how long each part of Start may take to become ready.
// A cold start of the API server on a busy 2-core machine running several
// test binaries at once takes well over envtest's default of 20 s.
const startTimeout = 90 * time.Second

// Options configure Start.
type Options struct {
	// CRDDirectories hold CRD YAML to install. Defaults to
	// <repo root>/config/crd/bases (the repository root is the nearest
	// directory above the working directory holding go.mod). A directory
	// that does not exist is an error.
	CRDDirectories []string
	// Cluster also starts kube-controller-manager, kube-scheduler and kwok
	// with one fake node named NodeName, so StatefulSet pods get created,
	// scheduled, Running and Ready. Defaults to false: API server only.
	Cluster bool
}

// Env is a running test API server, and with Options.Cluster the components
// beside it. Stop it when done.
type Env struct {
	// Config is an admin (system:masters) config for clients.
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file for this server, with the
	// same admin credentials, for kubectl and the component processes.
	Kubeconfig string
	// KubectlPath is the path of the kubectl binary in the assets directory.
	// (The brief named this field Kubectl; Go does not allow a field and a
	// method of the same name, and the method is the more useful one.)
	KubectlPath string

	env   *envtest.Environment
	dir   string
	procs []*process

	stopOnce sync.Once
	stopErr  error
}

// AssetsDir returns the directory holding the test binaries:
// $KUBEBUILDER_ASSETS if set, else <repo root>/bin/k8s/<KubeVersion>. It
// fails, naming `make envtest-assets`, when kube-apiserver or etcd is missing
// there.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "bin", "k8s", KubeVersion)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("kubetest: resolving assets directory: %w", err)
	}
	if err := requireBinaries(dir, "kube-apiserver", "etcd"); err != nil {
		return "", err
	}
	return dir, nil
}

// requireBinaries fails when any of names is not an executable file in dir.
func requireBinaries(dir string, names ...string) error {
	var missing []string
	for _, name := range names {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("kubetest: %s not found in %s: run make envtest-assets (or set KUBEBUILDER_ASSETS to a directory holding them)",
			strings.Join(missing, ", "), dir)
	}
	return nil
}

// repoRoot walks up from the working directory to the nearest go.mod.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("kubetest: finding repository root: %w", err)
	}
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("kubetest: no go.mod above %s", wd)
		}
		dir = parent
	}
}

// Start starts an API server with the CRDs of opts installed and, with
// opts.Cluster, the mini cluster beside it, and waits until all of it is
// ready. On error everything already started is stopped again.
func Start(opts Options) (*Env, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	if opts.Cluster {
		if err := requireBinaries(assets, clusterBinaries...); err != nil {
			return nil, err
		}
	}
	crdDirs := opts.CRDDirectories
	if len(crdDirs) == 0 {
		root, err := repoRoot()
		if err != nil {
			return nil, err
		}
		crdDirs = []string{filepath.Join(root, "config", "crd", "bases")}
	}
	for _, d := range crdDirs {
		fi, err := os.Stat(d)
		if err != nil {
			return nil, fmt.Errorf("kubetest: CRD directory: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("kubetest: CRD directory %s is not a directory", d)
		}
	}

	dir, err := os.MkdirTemp("", "kubetest-")
	if err != nil {
		return nil, fmt.Errorf("kubetest: creating temp dir: %w", err)
	}
	e := &Env{dir: dir, KubectlPath: filepath.Join(assets, "kubectl")}
	if err := e.start(assets, crdDirs, opts.Cluster); err != nil {
		return nil, errors.Join(err, e.Stop())
	}
	return e, nil
}

func (e *Env) start(assets string, crdDirs []string, cluster bool) error {
	apiLog, err := os.Create(filepath.Join(e.dir, "kube-apiserver.log"))
	if err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	defer apiLog.Close() // the processes hold their own descriptors
	etcdLog, err := os.Create(filepath.Join(e.dir, "etcd.log"))
	if err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	defer etcdLog.Close()

	e.env = &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     crdDirs,
		ErrorIfCRDPathMissing: true,
		ControlPlane: envtest.ControlPlane{
			APIServer: &envtest.APIServer{Out: apiLog, Err: apiLog},
			Etcd:      &envtest.Etcd{Out: etcdLog, Err: etcdLog},
		},
	}
	if os.Getenv("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT") == "" {
		e.env.ControlPlaneStartTimeout = startTimeout
	}
	cfg, err := e.env.Start()
	if err != nil {
		return fmt.Errorf("kubetest: starting envtest: %w\n--- kube-apiserver log (tail) ---\n%s\n--- etcd log (tail) ---\n%s",
			err, tailFile(apiLog.Name()), tailFile(etcdLog.Name()))
	}
	e.Config = cfg

	e.Kubeconfig = filepath.Join(e.dir, "kubeconfig")
	if err := os.WriteFile(e.Kubeconfig, e.env.KubeConfig, 0o600); err != nil {
		return fmt.Errorf("kubetest: writing kubeconfig: %w", err)
	}

	if cluster {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		if err := e.startCluster(ctx, assets); err != nil {
			return err
		}
	}
	return nil
}

// Stop stops everything Start started (components first, then the API server
// and etcd) and removes the temporary directory. It is safe to call twice;
// later calls return the first call's result.
func (e *Env) Stop() error {
	e.stopOnce.Do(func() {
		var errs []error
		for i := len(e.procs) - 1; i >= 0; i-- {
			errs = append(errs, e.procs[i].stop())
		}
		if e.env != nil {
			if err := e.env.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("kubetest: stopping envtest: %w", err))
			}
		}
		if err := os.RemoveAll(e.dir); err != nil {
			errs = append(errs, fmt.Errorf("kubetest: removing temp dir: %w", err))
		}
		e.stopErr = errors.Join(errs...)
	})
	return e.stopErr
}

// Kubectl runs kubectl --kubeconfig e.Kubeconfig args... and returns its
// combined output; the error includes that output.
func (e *Env) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.KubectlPath, append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
