//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// monitoringCRDs are the Prometheus operator's CRDs the chart's monitors
// and rules need, as charts/testdata holds them (v0.93.0, unchanged).
var monitoringCRDs = []string{"podmonitors.monitoring.coreos.com", "servicemonitors.monitoring.coreos.com",
	"prometheusrules.monitoring.coreos.com"}

// installMonitoringCRDs creates the Prometheus operator's CRDs if the
// cluster has none of them, and remembers them for the tear-down. A
// cluster that has some of them keeps its own: the run uses them and
// deletes nothing.
func (s *suite) installMonitoringCRDs(t *testing.T) {
	t.Helper()
	present := strings.Fields(kubectl(t, append([]string{"get", "crd", "--ignore-not-found", "-o", "name"}, monitoringCRDs...)...))
	if len(present) > 0 {
		t.Logf("the cluster has the Prometheus operator's CRDs %v: using them", present)
		return
	}
	dir := filepath.Join(cfg.root, "charts", "testdata", "prometheus-operator-crds")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) != len(monitoringCRDs) {
		t.Fatalf("the Prometheus operator's CRDs in %s: %v (%v)", dir, files, err)
	}
	s.monitoringCRDs = monitoringCRDs
	for _, f := range files {
		kubectl(t, "apply", "--server-side", "-f", f)
	}
	kubectl(t, append([]string{"wait", "--for=condition=Established", "--timeout=60s"}, prefixed("crd/", monitoringCRDs)...)...)
}

func prefixed(prefix string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = prefix + n
	}
	return out
}

// checkMonitoring checks what the chart installed with monitoring and the
// PodDisruptionBudget on: the PodMonitor, ServiceMonitor and
// PrometheusRule accepted by the API server, the dashboard ConfigMap
// labelled for Grafana's sidecar and holding JSON, and the operator's
// PodDisruptionBudget covering both operator pods.
func (s *suite) checkMonitoring(t *testing.T) {
	t.Helper()
	for _, kind := range []string{"podmonitors", "servicemonitors", "prometheusrules"} {
		if got := strings.Fields(kubectl(t, "get", kind, "-n", s.ns, "-o", "name")); len(got) != 1 {
			t.Errorf("%s in %s: %v, want the chart's one", kind, s.ns, got)
		}
	}
	dashboards := strings.Fields(kubectl(t, "get", "configmaps", "-n", s.ns, "-l", "grafana_dashboard", "-o", "name"))
	if len(dashboards) != 1 {
		t.Errorf("ConfigMaps labelled grafana_dashboard: %v, want the chart's one", dashboards)
	} else if data := kubectl(t, "get", dashboards[0], "-n", s.ns, "-o", "jsonpath={.data}"); !strings.Contains(data, "projectionist_") {
		t.Errorf("dashboard %s holds no projectionist panel: %.200s", dashboards[0], data)
	}
	eventually(t, "the operator's PodDisruptionBudget over its 2 pods", readyTimeout, func(ctx context.Context) error {
		var list policyv1.PodDisruptionBudgetList
		if err := s.c.List(ctx, &list, client.InNamespace(s.ns), client.MatchingLabels{"app.kubernetes.io/instance": s.release}); err != nil {
			return err
		}
		if len(list.Items) != 1 {
			return fmt.Errorf("%d PodDisruptionBudgets of the release", len(list.Items))
		}
		st := list.Items[0].Status
		if st.ExpectedPods != 2 || st.CurrentHealthy != 2 || st.DisruptionsAllowed < 1 {
			return fmt.Errorf("%s: expectedPods %d, currentHealthy %d, disruptionsAllowed %d",
				list.Items[0].Name, st.ExpectedPods, st.CurrentHealthy, st.DisruptionsAllowed)
		}
		return nil
	})
}
