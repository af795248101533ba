package charts_test

import (
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers/resources"
	"github.com/projectionist/projectionist/worker"
)

// prometheusOperator makes helm template render as for a cluster that
// serves the Prometheus operator's API.
const prometheusOperator = "--api-versions=monitoring.coreos.com/v1"

// The parts of the Prometheus operator's objects the chart sets. Decoding
// is strict, so a field the chart renders and these lack fails the test;
// TestOnAPIServer checks the objects against the operator's real CRDs.
type (
	monitorMeta struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   metav1.ObjectMeta `json:"metadata"`
	}
	endpoint struct {
		Port            string         `json:"port"`
		Path            string         `json:"path"`
		Interval        string         `json:"interval,omitempty"`
		ScrapeTimeout   string         `json:"scrapeTimeout,omitempty"`
		Scheme          string         `json:"scheme,omitempty"`
		BearerTokenFile string         `json:"bearerTokenFile,omitempty"`
		Authorization   *authorization `json:"authorization,omitempty"`
		TLSConfig       *tlsConfig     `json:"tlsConfig,omitempty"`
	}
	authorization struct {
		Type        string                   `json:"type"`
		Credentials corev1.SecretKeySelector `json:"credentials"`
	}
	tlsConfig struct {
		InsecureSkipVerify bool   `json:"insecureSkipVerify,omitempty"`
		ServerName         string `json:"serverName,omitempty"`
		CA                 *struct {
			Secret *corev1.SecretKeySelector `json:"secret,omitempty"`
		} `json:"ca,omitempty"`
	}
	namespaceSelector struct {
		Any        bool     `json:"any,omitempty"`
		MatchNames []string `json:"matchNames,omitempty"`
	}
	// monitor is one of the operator's objects: type, metadata and a spec S.
	monitor[S any] struct {
		monitorMeta `json:",inline"`
		Spec        S `json:"spec"`
	}
	// monitorSelectors are the spec fields PodMonitor and ServiceMonitor share.
	monitorSelectors struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector namespaceSelector    `json:"namespaceSelector"`
	}
	podMonitor monitor[struct {
		monitorSelectors    `json:",inline"`
		PodMetricsEndpoints []endpoint `json:"podMetricsEndpoints"`
	}]
	serviceMonitor monitor[struct {
		monitorSelectors `json:",inline"`
		Endpoints        []endpoint `json:"endpoints"`
	}]
	prometheusRule monitor[struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []rule `json:"rules"`
		} `json:"groups"`
	}]
	rule struct {
		Alert       string            `json:"alert"`
		Expr        string            `json:"expr"`
		For         string            `json:"for,omitempty"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	}
)

// rules returns the PrometheusRule's rules by alert name.
func (r prometheusRule) rules() map[string]rule {
	m := map[string]rule{}
	for _, g := range r.Spec.Groups {
		for _, ru := range g.Rules {
			m[ru.Alert] = ru
		}
	}
	return m
}

// selects reports whether sel selects an object labelled labels (matchLabels
// and the Exists/In operators the chart uses).
func selects(t *testing.T, sel metav1.LabelSelector, l map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(&sel)
	if err != nil {
		t.Fatalf("selector %+v: %v", sel, err)
	}
	return s.Matches(labels.Set(l))
}

var cmpSorted = cmpopts.SortSlices(func(a, b string) bool { return a < b })

// workerPodLabels are the labels the operator puts on the pods of
// Projection name (spec.podLabels aside).
func workerPodLabels(name string) map[string]string {
	return resources.Labels(&v1alpha1.Projection{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "demo"}})
}

func TestMonitoring(t *testing.T) {
	tests := []valuesTest{{
		name:   "PodMonitor selects the worker pods of every Projection, in every namespace",
		values: "monitoring: {podMonitor: {enabled: true}}",
		check: func(t *testing.T, r rendered) {
			var pm podMonitor
			r.get(t, "PodMonitor", fullname+"-workers", &pm)
			if pm.APIVersion != "monitoring.coreos.com/v1" || pm.Metadata.Namespace != namespace {
				t.Errorf("PodMonitor %s in %q, want monitoring.coreos.com/v1 in %q", pm.APIVersion, pm.Metadata.Namespace, namespace)
			}
			for _, name := range []string{"user-count", "revenue"} {
				if l := workerPodLabels(name); !selects(t, pm.Spec.Selector, l) {
					t.Errorf("PodMonitor selector %+v does not select the worker pods of %s (labels %v)", pm.Spec.Selector, name, l)
				}
			}
			// Not the operator's own pods, nor a pod without the projection label.
			d, _ := r.operator(t)
			if selects(t, pm.Spec.Selector, d.Spec.Template.Labels) {
				t.Errorf("PodMonitor selects the operator's pods (labels %v)", d.Spec.Template.Labels)
			}
			l := workerPodLabels("x")
			delete(l, resources.LabelProjection)
			if selects(t, pm.Spec.Selector, l) {
				t.Errorf("PodMonitor selects a pod without %s", resources.LabelProjection)
			}
			wantEqual(t, "namespaceSelector", namespaceSelector{Any: true}, pm.Spec.NamespaceSelector)
			want := []endpoint{{Port: resources.PortName, Path: worker.PathMetrics}}
			wantEqual(t, "podMetricsEndpoints, against the worker container's port and path", want, pm.Spec.PodMetricsEndpoints)
			for _, kind := range []string{"ServiceMonitor", "PrometheusRule", "ConfigMap"} {
				for _, o := range r.objects {
					if o.Kind == kind {
						t.Errorf("%s %s rendered, but only the PodMonitor is on", o.Kind, o.Name)
					}
				}
			}
		},
	}, {
		name:   "PodMonitor in the watched namespace, with labels, interval and timeout",
		values: "watchNamespace: demo\nmonitoring: {podMonitor: {enabled: true, labels: {release: kps}, interval: 15s, scrapeTimeout: 10s}}",
		check: func(t *testing.T, r rendered) {
			var pm podMonitor
			r.get(t, "PodMonitor", fullname+"-workers", &pm)
			wantEqual(t, "namespaceSelector", namespaceSelector{MatchNames: []string{"demo"}}, pm.Spec.NamespaceSelector)
			if pm.Metadata.Labels["release"] != "kps" || pm.Metadata.Labels["app.kubernetes.io/name"] == "" {
				t.Errorf("labels = %v, want release=kps beside the chart's", pm.Metadata.Labels)
			}
			want := []endpoint{{Port: resources.PortName, Path: worker.PathMetrics, Interval: "15s", ScrapeTimeout: "10s"}}
			wantEqual(t, "podMetricsEndpoints", want, pm.Spec.PodMetricsEndpoints)
		},
	}, {
		name:   "ServiceMonitor scrapes the operator's metrics Service",
		values: "monitoring: {serviceMonitor: {enabled: true, labels: {release: kps}, interval: 1m}}",
		check: func(t *testing.T, r rendered) {
			var sm serviceMonitor
			r.get(t, "ServiceMonitor", fullname, &sm)
			var svc corev1.Service
			r.get(t, "Service", fullname+"-metrics", &svc)
			if !selects(t, sm.Spec.Selector, svc.Labels) {
				t.Errorf("ServiceMonitor selector %+v does not select the metrics Service (labels %v)", sm.Spec.Selector, svc.Labels)
			}
			wantEqual(t, "namespaceSelector", namespaceSelector{MatchNames: []string{namespace}}, sm.Spec.NamespaceSelector)
			// Secure metrics (the default): HTTPS with Prometheus's own
			// token, and the self-signed certificate is not verified.
			want := []endpoint{{Port: svc.Spec.Ports[0].Name, Path: "/metrics", Interval: "1m", Scheme: "https",
				BearerTokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token", TLSConfig: &tlsConfig{InsecureSkipVerify: true}}}
			wantEqual(t, "endpoints, against the metrics Service's port", want, sm.Spec.Endpoints)
			if sm.Metadata.Labels["release"] != "kps" {
				t.Errorf("labels = %v, want release=kps", sm.Metadata.Labels)
			}
		},
	}, {
		name: "ServiceMonitor with a token Secret and the metrics certificate's CA",
		values: "metrics: {certSecret: metrics-tls}\n" +
			"monitoring: {serviceMonitor: {enabled: true, bearerTokenSecret: {name: prometheus-token}}}",
		check: func(t *testing.T, r rendered) {
			var sm serviceMonitor
			r.get(t, "ServiceMonitor", fullname, &sm)
			ca := &struct {
				Secret *corev1.SecretKeySelector `json:"secret,omitempty"`
			}{Secret: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "metrics-tls"}, Key: "ca.crt"}}
			want := []endpoint{{Port: "metrics", Path: "/metrics", Scheme: "https",
				Authorization: &authorization{Type: "Bearer", Credentials: corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "prometheus-token"}, Key: "token"}},
				TLSConfig: &tlsConfig{ServerName: fullname + "-metrics." + namespace + ".svc", CA: ca}}}
			wantEqual(t, "endpoints", want, sm.Spec.Endpoints)
		},
	}, {
		name:   "ServiceMonitor of plain HTTP metrics",
		values: "metrics: {secure: false}\nmonitoring: {serviceMonitor: {enabled: true}}",
		check: func(t *testing.T, r rendered) {
			var sm serviceMonitor
			r.get(t, "ServiceMonitor", fullname, &sm)
			want := []endpoint{{Port: "metrics", Path: "/metrics", Scheme: "http"}}
			wantEqual(t, "endpoints", want, sm.Spec.Endpoints)
		},
	}, {
		name:   "PrometheusRule with the default thresholds",
		values: "monitoring: {prometheusRule: {enabled: true}}",
		check: func(t *testing.T, r rendered) {
			var pr prometheusRule
			r.get(t, "PrometheusRule", fullname, &pr)
			rules := pr.rules()
			var names []string
			for name := range maps.Keys(rules) {
				names = append(names, name)
			}
			want := []string{"ProjectionistBatchesSlow", "ProjectionistDeadLetters", "ProjectionistEventsPoisoned", "ProjectionistHorizonStalled",
				"ProjectionistLagHigh", "ProjectionistNotProcessing", "ProjectionistPartitionIdle", "ProjectionistTopologyDisagreement", "ProjectionistTopologyMismatch",
				"ProjectionistDatabaseDown", "ProjectionistProjectionDegraded", "ProjectionistProjectionStalled"}
			if diff := cmp.Diff(want, names, cmpSorted); diff != "" {
				t.Errorf("alerts (-want +got):\n%s", diff)
			}
			for name, ru := range rules {
				if ru.Labels["severity"] == "" || ru.Annotations["summary"] == "" || ru.Annotations["description"] == "" {
					t.Errorf("%s: labels %v, annotations %v: want a severity, a summary and a description", name, ru.Labels, ru.Annotations)
				}
				// Prometheus, not Helm, expands the annotations' templates.
				if s := ru.Annotations["summary"]; !strings.Contains(s, "{{ $labels.") || strings.Contains(s, "<no value>") {
					t.Errorf("%s: summary %q: want Prometheus's $labels left in it", name, ru.Annotations["summary"])
				}
			}
			for alert, suffix := range map[string]string{
				"ProjectionistLagHigh":        "> 10000",
				"ProjectionistHorizonStalled": "> 60",
				"ProjectionistBatchesSlow":    "> 5",
			} {
				if !strings.HasSuffix(rules[alert].Expr, suffix) {
					t.Errorf("%s: expr %q, want it to end with %q", alert, rules[alert].Expr, suffix)
				}
			}
		},
	}, {
		name: "PrometheusRule thresholds and labels",
		values: `monitoring: {prometheusRule: {enabled: true, labels: {role: alert-rules}, alertLabels: {team: data},
  lagEventsThreshold: 2000000, horizonStallSeconds: 300, batchDurationSeconds: 0.5}}`,
		check: func(t *testing.T, r rendered) {
			var pr prometheusRule
			r.get(t, "PrometheusRule", fullname, &pr)
			if pr.Metadata.Labels["role"] != "alert-rules" {
				t.Errorf("labels = %v, want role=alert-rules", pr.Metadata.Labels)
			}
			rules := pr.rules()
			for alert, suffix := range map[string]string{
				// Not 2e+06: written out, as an integer.
				"ProjectionistLagHigh":        "> 2000000",
				"ProjectionistHorizonStalled": "> 300",
				"ProjectionistBatchesSlow":    "> 0.5",
			} {
				if !strings.HasSuffix(rules[alert].Expr, suffix) {
					t.Errorf("%s: expr %q, want it to end with %q", alert, rules[alert].Expr, suffix)
				}
			}
			for name, ru := range rules {
				if ru.Labels["team"] != "data" || ru.Labels["severity"] == "" {
					t.Errorf("%s: labels %v, want team=data beside severity", name, ru.Labels)
				}
			}
		},
	}, {
		name:   "dashboard ConfigMap",
		values: "monitoring: {dashboard: {enabled: true}}",
		check: func(t *testing.T, r rendered) {
			var cm corev1.ConfigMap
			r.get(t, "ConfigMap", fullname+"-dashboard", &cm)
			if cm.Namespace != namespace || cm.Labels["grafana_dashboard"] != "1" {
				t.Errorf("ConfigMap in %q labelled %v, want %q and grafana_dashboard=1", cm.Namespace, cm.Labels, namespace)
			}
			file, err := os.ReadFile(filepath.Join(chartDir, "files", "dashboards", "projectionist.json"))
			if err != nil {
				t.Fatal(err)
			}
			if got := cm.Data["projectionist.json"]; got != strings.TrimSpace(string(file)) {
				t.Errorf("ConfigMap data differs from files/dashboards/projectionist.json:\n%s", cmp.Diff(string(file), got))
			}
			if !json.Valid([]byte(cm.Data["projectionist.json"])) {
				t.Error("the dashboard is not valid JSON")
			}
		},
	}, {
		name:   "dashboard in Grafana's namespace, with labels and annotations",
		values: "monitoring: {dashboard: {enabled: true, namespace: grafana, labels: {team: ops}, annotations: {grafana_folder: Projectionist}}}",
		check: func(t *testing.T, r rendered) {
			var cm corev1.ConfigMap
			r.get(t, "ConfigMap", fullname+"-dashboard", &cm)
			if cm.Namespace != "grafana" || cm.Labels["team"] != "ops" || cm.Labels["grafana_dashboard"] != "1" ||
				cm.Annotations["grafana_folder"] != "Projectionist" {
				t.Errorf("ConfigMap namespace %q, labels %v, annotations %v", cm.Namespace, cm.Labels, cm.Annotations)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.check(t, renderWith(t, tt.values, prometheusOperator))
		})
	}
}

// TestMonitoringWithoutThePrometheusOperator: off (the default), nothing of
// the Prometheus operator's is rendered, so a cluster without its CRDs
// installs the chart (TestDefaults renders without --api-versions). On,
// rendering for such a cluster fails and says why, instead of leaving the
// object out silently; the dashboard needs no CRD.
func TestMonitoringWithoutThePrometheusOperator(t *testing.T) {
	for _, value := range []string{"monitoring.podMonitor.enabled", "monitoring.serviceMonitor.enabled", "monitoring.prometheusRule.enabled"} {
		out, err := exec.Command(helm(t), "template", release, chartDir, "--set", value+"=true").CombinedOutput()
		want := value + " is true, but the cluster does not serve monitoring.coreos.com/v1"
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("helm template --set %s=true: err %v, want an error containing %q:\n%s", value, err, want, out)
		}
	}
	r := render(t, "monitoring: {dashboard: {enabled: true}}")
	if !r.has("ConfigMap", fullname+"-dashboard") {
		t.Errorf("no dashboard ConfigMap without the Prometheus operator: %v", r.names())
	}

	out, err := exec.Command(helm(t), "template", release, chartDir, prometheusOperator,
		"--set", "monitoring.serviceMonitor.enabled=true,metrics.service.enabled=false").CombinedOutput()
	if want := "monitoring.serviceMonitor.enabled needs metrics.service.enabled"; err == nil || !strings.Contains(string(out), want) {
		t.Errorf("ServiceMonitor without the metrics Service: err %v, want an error containing %q:\n%s", err, want, out)
	}
}

// wantEqual reports an error, with the -want +got diff, when got is not want.
func wantEqual[T any](t *testing.T, what string, want, got T) {
	t.Helper()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", what, diff)
	}
}
