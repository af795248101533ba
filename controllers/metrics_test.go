package controllers_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/internal/pgtest"
)

// gaugeOf is the value of the gauge name with the given label values, and
// whether there is one.
func gaugeOf(t *testing.T, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metrics
				}
			}
			return metricValue(m), true
		}
	}
	return 0, false
}

func metricValue(m *dto.Metric) float64 { return m.GetGauge().GetValue() }

// The operator's /metrics carries each Projection's status: lag,
// partitions, replicas, dead letters, suspension and conditions, with
// names that pass promlint.
func TestOperatorProjectionMetrics(t *testing.T) {
	ns := newNamespace(t)
	newSecret(t, ns, "db", map[string]string{"dsn": pgtest.NewDatabase(t)})
	newProjection(t, ns, "metered", "metered_counts", 2)
	eventually(t, 60*time.Second, "Ready with 2 partitions", func() error {
		p := getProjection(t, ns, "metered")
		if p.Status.Partitions != 2 {
			return fmt.Errorf("%d partitions", p.Status.Partitions)
		}
		return nil
	})
	ids := map[string]string{"namespace": ns, "name": "metered", "projection": "metered_counts"}
	eventually(t, 30*time.Second, "the metrics to match the status", func() error {
		p := getProjection(t, ns, "metered")
		for name, want := range map[string]float64{
			"projectionist_projection_partitions":       2,
			"projectionist_projection_desired_replicas": 2,
			"projectionist_projection_ready_replicas":   float64(p.Status.ReadyReplicas),
			"projectionist_projection_lag_events":       float64(p.Status.Lag),
			"projectionist_projection_dead_letters":     0,
			"projectionist_projection_suspended":        0,
		} {
			if got, ok := gaugeOf(t, name, ids); !ok || got != want {
				return fmt.Errorf("%s is %v (present: %t), want %v", name, got, ok, want)
			}
		}
		for _, c := range p.Status.Conditions {
			for _, s := range []string{"True", "False", "Unknown"} {
				want := 0.0
				if string(c.Status) == s {
					want = 1
				}
				labels := map[string]string{"namespace": ns, "name": "metered", "type": c.Type, "status": s}
				if got, ok := gaugeOf(t, "projectionist_projection_condition", labels); !ok || got != want {
					return fmt.Errorf("condition %s status %s is %v (present: %t), want %v", c.Type, s, got, ok, want)
				}
			}
		}
		if len(p.Status.Conditions) == 0 {
			return fmt.Errorf("no conditions yet")
		}
		return nil
	})
	if _, ok := gaugeOf(t, "projectionist_projection_condition", map[string]string{"namespace": ns, "type": v1alpha1.ConditionReady, "status": "True"}); !ok {
		t.Errorf("no Ready condition series")
	}

	problems, err := testutil.GatherAndLint(crmetrics.Registry, "projectionist_projection_lag_events", "projectionist_projection_lag_seconds",
		"projectionist_projection_partitions", "projectionist_projection_desired_replicas", "projectionist_projection_ready_replicas",
		"projectionist_projection_dead_letters", "projectionist_projection_suspended", "projectionist_projection_condition")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
