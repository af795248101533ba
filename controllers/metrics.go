// The operator's per-Projection metrics, on its /metrics with
// controller-runtime's: read from the informer cache at each scrape (the
// status the operator last wrote), so a scrape costs no database query and
// no API request.

package controllers

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// projectionLabels name a Projection's series: its namespace, its
// resource name and its projectionName (the checkpoints' name, which the
// workers' metrics call projection).
var projectionLabels = []string{"namespace", "name", "projection"}

// projectionDesc describes a series of one Projection: labelled with
// projectionLabels, then extra.
func projectionDesc(name, help string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, slices.Concat(projectionLabels, extra), nil)
}

var (
	descLag = projectionDesc("projectionist_projection_lag_events",
		"Events still to pass over all partitions, as the Projection's status last reported (status.lag).")
	descLagSeconds = projectionDesc("projectionist_projection_lag_seconds",
		"Age of the oldest event still to pass, in seconds (status.lagSeconds); 0 when caught up.")
	descPartitions = projectionDesc("projectionist_projection_partitions",
		"Partition count of the projection's topology in the database (status.partitions).")
	descDesired = projectionDesc("projectionist_projection_desired_replicas",
		"Worker pods the spec asks for (spec.replicas, or the autoscaler's count under spec.autoscaling), kept while suspended.")
	descReady = projectionDesc("projectionist_projection_ready_replicas",
		"Worker pods ready (status.readyReplicas).")
	descDeadLetters = projectionDesc("projectionist_projection_dead_letters",
		"Dead letters waiting for a retry or a discard (status.deadLetters).")
	descSuspended = projectionDesc("projectionist_projection_suspended",
		"1 while spec.suspend is true.")
	descCondition = projectionDesc("projectionist_projection_condition",
		"1 for the status (True, False, Unknown) each condition of the Projection has, 0 for the others.", "type", "status")
)

// projectionCollector reports every Projection the reader lists.
type projectionCollector struct {
	mu     sync.Mutex
	reader client.Reader
}

// projectionMetrics is registered once per process: a test process runs
// several managers, and each sets the reader.
var projectionMetrics = &projectionCollector{}

func init() { crmetrics.Registry.MustRegister(projectionMetrics) }

// ProjectionMetrics is the collector of the operator's per-Projection
// metrics, registered on controller-runtime's registry; its Describe lists
// them (the chart's tests check the alerts against it).
func ProjectionMetrics() prometheus.Collector { return projectionMetrics }

func (c *projectionCollector) setReader(r client.Reader) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reader = r
}

// Describe sends the descriptors.
func (c *projectionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLag, descLagSeconds, descPartitions, descDesired, descReady, descDeadLetters, descSuspended, descCondition} {
		ch <- d
	}
}

// Collect lists the Projections and sends their series. Before the
// manager has a cache (or if listing fails) it sends none.
func (c *projectionCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	r := c.reader
	c.mu.Unlock()
	if r == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list v1alpha1.ProjectionList
	if err := r.List(ctx, &list); err != nil {
		return
	}
	for i := range list.Items {
		collectProjection(ch, &list.Items[i])
	}
}

func collectProjection(ch chan<- prometheus.Metric, p *v1alpha1.Projection) {
	lv := []string{p.Namespace, p.Name, p.EffectiveProjectionName()}
	st := &p.Status
	gauge := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(append([]string{}, lv...), extra...)...)
	}
	gauge(descLag, float64(st.Lag))
	gauge(descLagSeconds, float64(st.LagSeconds))
	gauge(descPartitions, float64(st.Partitions))
	desired, _ := p.DesiredPartitions()
	gauge(descDesired, float64(desired))
	gauge(descReady, float64(st.ReadyReplicas))
	gauge(descDeadLetters, float64(st.DeadLetters))
	suspended := 0.0
	if p.Suspended() {
		suspended = 1
	}
	gauge(descSuspended, suspended)
	for _, cond := range st.Conditions {
		for _, s := range []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown} {
			v := 0.0
			if cond.Status == s {
				v = 1
			}
			gauge(descCondition, v, cond.Type, string(s))
		}
	}
}
