//go:build e2e

// Package e2e_test is the end-to-end suite: the operator installed with the
// Helm chart into a real cluster, real worker pods against a real
// PostgreSQL, driven with the tools a user drives it with (helm, kubectl,
// `projectionist events generate`), and assertions on the state of the
// world: pods, Projection status, `kubectl get` output, and the rows of the
// read models.
//
//	make test-e2e         # against $KUBECONFIG, with E2E_* below
//	make test-e2e-local   # builds the image, starts the local cluster and a PostgreSQL, runs it, tears down
//
// It is cluster-agnostic. The environment says where things are:
//
//	KUBECONFIG            the cluster (required)
//	E2E_IMAGE             the projectionist image the cluster's nodes hold
//	                      (default docker.io/projectionist/projectionist:$VERSION)
//	E2E_CUSTOM_IMAGE      the image of examples/custom-worker, a user's own
//	                      worker.Main program (default
//	                      docker.io/projectionist/custom-worker:$VERSION)
//	E2E_DATABASE_CA       a CA file that verifies the database server's
//	                      certificate for the pods' address: the custom
//	                      worker then connects with sslmode=verify-full and
//	                      that CA mounted from a ConfigMap (default: none;
//	                      the CA is mounted but the DSN is E2E_POD_DATABASE_URL's)
//	E2E_PULL_POLICY       pull policy of operator and workers (default IfNotPresent)
//	E2E_DATABASE_URL      PostgreSQL as this process reaches it (required); its
//	                      user needs CREATEDB: every run makes a database of its
//	                      own and drops it afterwards (without CREATEDB, the
//	                      database must have no events yet and is left as is)
//	E2E_POD_DATABASE_URL  the same server as the pods reach it (default
//	                      E2E_DATABASE_URL)
//	E2E_KUBECTL, E2E_HELM the tools (default: kubectl and helm on PATH, else
//	                      bin/k8s/v1.37.1/kubectl and bin/helm)
//	E2E_KEEP_ON_FAILURE   non-empty: leave the namespace, release and database
//	                      of a failed run for inspection
//
// Each run installs the chart as a release named like its fresh namespace
// (projectionist-e2e-XXXXXX), watching only that namespace. On failure it
// dumps the operator's and workers' logs, `kubectl describe` of pods and
// Projections, the namespace's events and the projections' rows in the
// database. The timings of the phases (Projection applied to pods Ready,
// scale to new partitions processing, ...) are logged and summarised at the
// end.
package e2e_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"
)

// cfg is the suite's configuration, read by TestMain.
var cfg config

type config struct {
	root                string // the repository's root
	bin                 string // the projectionist binary, built by TestMain
	plugin              string // the kubectl-projectionist plugin, built by TestMain
	kubectl, helm       string
	image               string // repository:tag
	customImage         string // examples/custom-worker's image
	databaseCA          []byte // E2E_DATABASE_CA's contents, if set
	imageRepo, imageTag string
	pullPolicy          string
	databaseURL         string // for this process
	podDatabaseURL      string // for the pods
	keepOnFailure       bool
}

func TestMain(m *testing.M) {
	start := time.Now()
	tmp, err := os.MkdirTemp("", "projectionist-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	if err := configure(tmp); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.RemoveAll(tmp)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmp)
	printTimings(time.Since(start))
	os.Exit(code)
}

func configure(tmp string) error {
	if os.Getenv("KUBECONFIG") == "" {
		return fmt.Errorf("KUBECONFIG is not set: the end-to-end suite needs a cluster.\n" +
			"  make test-e2e-local                      # this machine: local cluster + PostgreSQL, torn down afterwards\n" +
			"  KUBECONFIG=... E2E_DATABASE_URL=... make test-e2e   # a cluster of your own (see test/e2e/main_test.go)")
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	cfg.root = filepath.Clean(filepath.Join(wd, "..", ".."))
	if _, err := os.Stat(filepath.Join(cfg.root, "go.mod")); err != nil {
		return fmt.Errorf("cannot find the repository root from %s: %w", wd, err)
	}

	if cfg.image, err = imageFromEnv("E2E_IMAGE", "docker.io/projectionist/projectionist",
		"name the image the cluster's nodes hold, e.g. E2E_IMAGE=docker.io/projectionist/projectionist:dev"); err != nil {
		return err
	}
	slash := strings.LastIndex(cfg.image, "/")
	colon := strings.LastIndex(cfg.image, ":")
	if strings.Contains(cfg.image, "@") || colon <= slash {
		return fmt.Errorf("E2E_IMAGE=%q: want repository:tag (the chart takes a repository and a tag)", cfg.image)
	}
	cfg.imageRepo, cfg.imageTag = cfg.image[:colon], cfg.image[colon+1:]
	cfg.pullPolicy = envOr("E2E_PULL_POLICY", "IfNotPresent")
	if cfg.customImage, err = imageFromEnv("E2E_CUSTOM_IMAGE", "docker.io/projectionist/custom-worker",
		"name the image of examples/custom-worker the cluster's nodes hold (make image-custom-worker builds it)"); err != nil {
		return err
	}
	if f := os.Getenv("E2E_DATABASE_CA"); f != "" {
		if cfg.databaseCA, err = os.ReadFile(f); err != nil {
			return fmt.Errorf("E2E_DATABASE_CA: %w", err)
		}
	}

	cfg.databaseURL = os.Getenv("E2E_DATABASE_URL")
	if cfg.databaseURL == "" {
		return fmt.Errorf("E2E_DATABASE_URL is not set: a PostgreSQL connection string for this process, whose user may create databases (hack/local-postgres.sh start prints one); E2E_POD_DATABASE_URL is the same server as pods reach it")
	}
	cfg.podDatabaseURL = envOr("E2E_POD_DATABASE_URL", cfg.databaseURL)
	cfg.keepOnFailure = os.Getenv("E2E_KEEP_ON_FAILURE") != ""

	if cfg.kubectl, err = findTool("E2E_KUBECTL", "kubectl", filepath.Join(cfg.root, "bin", "k8s", "v1.37.1", "kubectl")); err != nil {
		return err
	}
	if cfg.helm, err = findTool("E2E_HELM", "helm", filepath.Join(cfg.root, "bin", "helm")); err != nil {
		return err
	}

	// The host-side binary: `projectionist migrate` and `events generate`.
	cfg.bin = filepath.Join(tmp, "projectionist")
	// go test puts its own GOROOT/bin first on the PATH of the tests it
	// runs, so this is the go that runs the suite.
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("building the CLI for the host: %w", err)
	}
	// And the kubectl plugin, run as a user would, with only a kubeconfig.
	cfg.plugin = filepath.Join(tmp, "kubectl-projectionist")
	for pkg, out := range map[string]string{"./cmd/projectionist": cfg.bin, "./cmd/kubectl-projectionist": cfg.plugin} {
		build := exec.Command(goTool, "build", "-o", out, pkg)
		build.Dir = cfg.root
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// findTool is $env, else name on PATH, else fallback.
func findTool(env, name, fallback string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if _, err := os.Stat(fallback); err == nil {
		return fallback, nil
	}
	return "", fmt.Errorf("no %s: not on PATH, not at %s; set %s", name, fallback, env)
}

// timings are the measured phases, in the order measured.
var timings struct {
	sync.Mutex
	list []timing
}

type timing struct {
	what string
	d    time.Duration
}

// recordTiming logs a measured duration and keeps it for the summary.
func recordTiming(t *testing.T, what string, d time.Duration) {
	t.Helper()
	t.Logf("TIMING %s: %s", what, d.Round(10*time.Millisecond))
	timings.Lock()
	timings.list = append(timings.list, timing{what, d})
	timings.Unlock()
}

func printTimings(total time.Duration) {
	var b bytes.Buffer
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "\ne2e timings:")
	timings.Lock()
	for _, tm := range timings.list {
		fmt.Fprintf(w, "  %s\t%s\n", tm.what, tm.d.Round(10*time.Millisecond))
	}
	timings.Unlock()
	fmt.Fprintf(w, "  whole suite (TestMain, including the build)\t%s\n", total.Round(10*time.Millisecond))
	w.Flush()
	os.Stdout.Write(b.Bytes())
}

// imageFromEnv returns $name, or repo:$VERSION when name is unset; hint
// says what to set when neither is.
func imageFromEnv(name, repo, hint string) (string, error) {
	if image := os.Getenv(name); image != "" {
		return image, nil
	}
	v := os.Getenv("VERSION")
	if v == "" {
		return "", fmt.Errorf("%s is not set (nor VERSION, for %s:$VERSION): %s", name, repo, hint)
	}
	return repo + ":" + v, nil
}
