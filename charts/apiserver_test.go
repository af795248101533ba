package charts_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/projectionist/projectionist/internal/kubetest"
)

// TestOnAPIServer applies the rendered chart to a real API server
// (server-side, dry run) with the chart's own CRD installed, in a namespace
// that enforces and warns on the restricted Pod Security Standard: every
// object must be accepted without a single warning. It also runs the CRD
// upgrade the chart's README documents.
func TestOnAPIServer(t *testing.T) {
	crds, err := filepath.Abs(filepath.Join(chartDir, "crds"))
	if err != nil {
		t.Fatal(err)
	}
	// The Prometheus operator's CRDs too, so that the PodMonitor,
	// ServiceMonitor and PrometheusRule are checked against their schemas.
	monitoringCRDs, err := filepath.Abs(filepath.Join("testdata", "prometheus-operator-crds"))
	if err != nil {
		t.Fatal(err)
	}
	env, err := kubetest.Start(kubetest.Options{CRDDirectories: []string{crds, monitoringCRDs}})
	if err != nil {
		t.Fatalf("starting the API server: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the API server: %v", err)
		}
	})
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
metrics: {port: 9090}
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
  serviceMonitor: {enabled: true, labels: {release: kps}, interval: 30s, scrapeTimeout: 10s}
  prometheusRule: {enabled: true, labels: {release: kps}, alertLabels: {team: data}, lagEventsThreshold: 5000, horizonStallSeconds: 120, batchDurationSeconds: 2.5}
  dashboard: {enabled: true, labels: {team: ops}, annotations: {grafana_folder: Projectionist}}
`},
		{"monitoring on, defaults otherwise", "monitoring: {podMonitor: {enabled: true}, serviceMonitor: {enabled: true}, prometheusRule: {enabled: true}, dashboard: {enabled: true}}"},
		{"no leader election, no metrics Service", "leaderElection: {enabled: false}\nmetrics: {service: {enabled: false}}"},
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

	// The CRD upgrade the README and NOTES.txt document: Helm created the CRD
	// on the first install; a later chart's CRD is applied server-side, and
	// only with --force-conflicts, since every field belongs to helm.
	t.Run("CRD upgrade", func(t *testing.T) {
		const crd = "customresourcedefinition/projections.projectionist.dev"
		if _, err := env.Kubectl(ctx, "delete", crd); err != nil {
			t.Fatal(err)
		}
		installed := filepath.Join(crds, "projectionist.dev_projections.yaml")
		if _, err := env.Kubectl(ctx, "create", "--field-manager=helm", "-f", installed); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(installed)
		if err != nil {
			t.Fatal(err)
		}
		const version = "controller-gen.kubebuilder.io/version: "
		if !bytes.Contains(b, []byte(version)) {
			t.Fatalf("no %q in %s", version, installed)
		}
		next := write(t, "crd-next.yaml", bytes.Replace(b, []byte(version), []byte(version+"next-"), 1))
		if out, err := env.Kubectl(ctx, "apply", "--server-side", "-f", next); err == nil || !strings.Contains(out, "conflict") {
			t.Errorf("apply --server-side without --force-conflicts: err %v, want a conflict with helm; kubectl said:\n%s", err, out)
		}
		if _, err := env.Kubectl(ctx, "apply", "--server-side", "--force-conflicts", "-f", next); err != nil {
			t.Fatal(err)
		}
		got, err := env.Kubectl(ctx, "get", crd, "-o", `jsonpath={.metadata.annotations.controller-gen\.kubebuilder\.io/version}`)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(got, "next-") {
			t.Errorf("controller-gen version annotation after the upgrade = %q, want the new CRD's next-…", got)
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
