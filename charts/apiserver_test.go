package charts_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/projectionist/projectionist/internal/kubetest"
)

// TestOnAPIServer applies the rendered chart to a real API server
// (server-side, dry run) with the chart's own CRD installed, in a namespace
// that enforces and warns on the restricted Pod Security Standard: every
// object must be accepted without a single warning. It also installs,
// upgrades and uninstalls the chart with helm, to see what happens to the
// CRD and the Projections with each crds.* setting.
func TestOnAPIServer(t *testing.T) {
	crds, err := filepath.Abs(filepath.Join(chartDir, "files", "crds"))
	if err != nil {
		t.Fatal(err)
	}
	// The Prometheus operator's CRDs too, so that the PodMonitor,
	// ServiceMonitor and PrometheusRule are checked against their schemas.
	monitoringCRDs, err := filepath.Abs(filepath.Join("testdata", "prometheus-operator-crds"))
	if err != nil {
		t.Fatal(err)
	}
	env := kubetest.New(t, kubetest.Options{CRDDirectories: []string{crds, monitoringCRDs}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	write := func(t *testing.T, name string, content []byte) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	ns := write(t, "namespace.yaml", []byte(`apiVersion: v1
kind: Namespace
metadata:
  name: `+namespace+`
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
`))
	if _, err := env.Kubectl(ctx, "apply", "--server-side", "-f", ns); err != nil {
		t.Fatal(err)
	}
	// The CRD the API server serves is the chart's.
	if _, err := env.Kubectl(ctx, "get", "crd", "projections.projectionist.dev"); err != nil {
		t.Fatal(err)
	}

	dryRun := func(t *testing.T, file string) string {
		t.Helper()
		out, err := env.Kubectl(ctx, "apply", "--server-side", "--dry-run=server", "-f", file)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	for i, tc := range []struct{ name, values string }{
		{"defaults", ""},
		{"every value set", `
replicaCount: 2
image: {repository: registry.example/projectionist, tag: v0.1.0, pullPolicy: Always}
imagePullSecrets: [{name: regcred}]
workerImage: {repository: registry.example/workers, tag: w1}
watchNamespace: demo
logLevel: debug
statusInterval: 30s
metrics: {port: 9090, certSecret: metrics-tls}
resources: {requests: {cpu: 50m, memory: 128Mi}, limits: {memory: 512Mi}}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: ops, effect: NoSchedule}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}}
podAnnotations: {example.com/team: ops}
serviceAccount: {annotations: {example.com/role: operator}}
podLabels: {team: ops}
priorityClassName: system-cluster-critical
topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}]
extraArgs: [--max-concurrent-reconciles=8]
extraEnv: [{name: GOMEMLIMIT, value: 200MiB}]
podDisruptionBudget: {maxUnavailable: 1}
networkPolicy: {enabled: true, metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]}
monitoring:
  podMonitor: {enabled: true, labels: {release: kps}, interval: 15s, scrapeTimeout: 10s}
  serviceMonitor: {enabled: true, labels: {release: kps}, interval: 30s, scrapeTimeout: 10s, bearerTokenSecret: {name: prometheus-token, key: token}}
  prometheusRule: {enabled: true, labels: {release: kps}, alertLabels: {team: data}, lagEventsThreshold: 5000, horizonStallSeconds: 120, batchDurationSeconds: 2.5}
  dashboard: {enabled: true, labels: {team: ops}, annotations: {grafana_folder: Projectionist}}
`},
		{"monitoring on, defaults otherwise", "monitoring: {podMonitor: {enabled: true}, serviceMonitor: {enabled: true}, prometheusRule: {enabled: true}, dashboard: {enabled: true}}"},
		{"no leader election, no metrics Service", "leaderElection: {enabled: false}\nmetrics: {service: {enabled: false}}"},
		{"plain HTTP metrics, ServiceMonitor", "metrics: {secure: false}\nmonitoring: {serviceMonitor: {enabled: true}}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := renderWith(t, tc.values, prometheusOperator)
			// kubectl splits -f at commas: no test name in the file's.
			out := dryRun(t, write(t, fmt.Sprintf("chart-%d.yaml", i), r.yaml))
			if strings.Contains(strings.ToLower(out), "warning") {
				t.Errorf("the API server warned:\n%s", out)
			}
			for _, o := range r.objects {
				if !strings.Contains(out, o.Name+" serverside-applied (server dry run)") {
					t.Errorf("%s %s not applied; kubectl said:\n%s", o.Kind, o.Name, out)
				}
			}
		})
	}

	// What the README and docs/operations.md say happens to the CRD, with
	// the real helm against the real API server: helm installs the CRD and
	// upgrades it with the chart; with crds.keep (the default) neither an
	// upgrade to crds.install=false nor helm uninstall deletes it or the
	// Projections; with crds.keep=false, uninstalling deletes both.
	t.Run("CRD lifecycle", func(t *testing.T) {
		const crd = "customresourcedefinition/" + crdName
		helmRun := func(t *testing.T, args ...string) {
			t.Helper()
			cmd := exec.CommandContext(ctx, helm(t), append(args, "--kubeconfig", env.Kubeconfig, "--namespace", namespace)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		get := func(t *testing.T, jsonpath string) string {
			t.Helper()
			out, err := env.Kubectl(ctx, "get", crd, "--ignore-not-found", "-o", "jsonpath="+jsonpath)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		const version = `{.metadata.annotations.controller-gen\.kubebuilder\.io/version}`
		const policy = `{.metadata.annotations.helm\.sh/resource-policy}`
		if _, err := env.Kubectl(ctx, "delete", crd); err != nil {
			t.Fatal(err)
		}

		// An earlier chart, whose CRD carries another controller-gen
		// version annotation, installs the CRD.
		earlier := filepath.Join(t.TempDir(), "earlier")
		if err := os.CopyFS(earlier, os.DirFS(chartDir)); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(earlier, "files", "crds", crdFile)
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		const versionKey = "controller-gen.kubebuilder.io/version: "
		if !bytes.Contains(b, []byte(versionKey)) {
			t.Fatalf("no %q in %s", versionKey, file)
		}
		if err := os.WriteFile(file, bytes.Replace(b, []byte(versionKey), []byte(versionKey+"earlier-"), 1), 0o600); err != nil {
			t.Fatal(err)
		}
		helmRun(t, "install", release, earlier)
		if got := get(t, version); !strings.HasPrefix(got, "earlier-") {
			t.Fatalf("CRD version annotation after install = %q, want the earlier chart's", got)
		}
		if got := get(t, policy); got != "keep" {
			t.Errorf("CRD resource policy = %q, want keep", got)
		}
		projection := write(t, "projection.yaml", []byte(`apiVersion: projectionist.dev/v1alpha1
kind: Projection
metadata: {name: kept, namespace: `+namespace+`}
spec: {projectionName: activity_log, database: {secretRef: {name: db}}}
`))
		if _, err := env.Kubectl(ctx, "create", "-f", projection); err != nil {
			t.Fatal(err)
		}

		// helm upgrade to this chart upgrades the CRD.
		helmRun(t, "upgrade", release, chartDir)
		if got, want := get(t, version), readVersion(t); got != want {
			t.Errorf("CRD version annotation after helm upgrade = %q, want this chart's %q", got, want)
		}
		// crds.install=false with keep: helm drops the CRD from the
		// release but does not delete it.
		helmRun(t, "upgrade", release, chartDir, "--set", "crds.install=false")
		if get(t, "{.metadata.name}") != crdName {
			t.Fatal("helm upgrade --set crds.install=false deleted the kept CRD")
		}
		// Back to crds.install=true: helm adopts the CRD again (it still
		// carries the release's ownership annotations).
		helmRun(t, "upgrade", release, chartDir)
		helmRun(t, "uninstall", release, "--wait")
		if get(t, "{.metadata.name}") != crdName {
			t.Fatal("helm uninstall deleted the CRD despite crds.keep=true")
		}
		if _, err := env.Kubectl(ctx, "get", "projection", "kept", "--namespace", namespace); err != nil {
			t.Errorf("the Projection is gone after helm uninstall: %v", err)
		}

		// Installing again adopts the kept CRD; an upgrade to
		// crds.keep=false removes the policy, and then uninstalling deletes
		// the CRD and the Projections.
		helmRun(t, "install", release, chartDir)
		helmRun(t, "upgrade", release, chartDir, "--set", "crds.keep=false")
		if got := get(t, policy); got != "" {
			t.Errorf("CRD resource policy with crds.keep=false = %q, want none", got)
		}
		helmRun(t, "uninstall", release, "--wait")
		if _, err := env.Kubectl(ctx, "wait", "--for=delete", crd, "--timeout=1m"); err != nil {
			t.Errorf("helm uninstall with crds.keep=false left the CRD: %v", err)
		}

		// A CRD without Helm's ownership, as chart 0.2.x's crds/ left it:
		// helm refuses it until the commands of docs/operations.md
		// (Upgrading) adopt it.
		if _, err := env.Kubectl(ctx, "create", "-f", filepath.Join(crds, crdFile)); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, helm(t), "install", release, chartDir, "--kubeconfig", env.Kubeconfig, "--namespace", namespace)
		if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "invalid ownership metadata") {
			t.Fatalf("helm install over an unowned CRD: err %v, want invalid ownership metadata:\n%s", err, out)
		}
		if _, err := env.Kubectl(ctx, "label", "--overwrite", "crd", crdName, "app.kubernetes.io/managed-by=Helm"); err != nil {
			t.Fatal(err)
		}
		if _, err := env.Kubectl(ctx, "annotate", "--overwrite", "crd", crdName,
			"meta.helm.sh/release-name="+release, "meta.helm.sh/release-namespace="+namespace); err != nil {
			t.Fatal(err)
		}
		helmRun(t, "install", release, chartDir)
		helmRun(t, "uninstall", release, "--wait")
		// The CRD stays, as the API server started, for the subtests below.
		if get(t, "{.metadata.name}") != crdName {
			t.Fatal("helm uninstall deleted the adopted CRD despite crds.keep=true")
		}
	})

	// The check above can see a warning: a pod that may run as root is one
	// the restricted namespace warns about.
	t.Run("warnings are seen", func(t *testing.T) {
		r := render(t, "")
		bad := bytes.Replace(r.yaml, []byte("runAsNonRoot: true"), []byte("runAsNonRoot: false"), 1)
		if bytes.Equal(bad, r.yaml) {
			t.Fatal("no runAsNonRoot: true in the rendered chart")
		}
		out := dryRun(t, write(t, "bad.yaml", bad))
		if !strings.Contains(out, "would violate PodSecurity") {
			t.Errorf("no PodSecurity warning for runAsNonRoot: false; kubectl said:\n%s", out)
		}
	})
}

// readVersion returns the controller-gen version annotation of the chart's
// CRD file.
func readVersion(t *testing.T) string {
	t.Helper()
	var crd struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	b, err := os.ReadFile(filepath.Join(chartDir, "files", "crds", crdFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatal(err)
	}
	return crd.Metadata.Annotations["controller-gen.kubebuilder.io/version"]
}
