package worker

import (
	"fmt"
	"runtime"
	"slices"

	"github.com/IBM/pgxpoolprometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/projectionist/projectionist/pkg/projection"
)

var (
	// labels name a partition's series: its projection and its partition.
	labels = []string{"projection", "partition"}

	// A partition's series.
	handledDesc = partitionDesc("projectionist_events_handled_total",
		"Events handled in committed batches.")
	batchesDesc = partitionDesc("projectionist_batches_total",
		"Batches run to completion, with or without events.")
	poisonedDesc = partitionDesc("projectionist_events_poisoned_total",
		"Events whose Handle failed and that the error policy skipped or dead-lettered.", "policy")
	positionDesc = partitionDesc("projectionist_checkpoint_transaction_id",
		"Transaction id of the partition's read position: events are read in (transaction id, global position) order, and every event of an earlier transaction in the partition's scope has been handled.")
	generationDesc = partitionDesc("projectionist_topology_generation",
		"Topology generation of the last batch (0 while following and no topology exists).")
	partitionsDesc = partitionDesc("projectionist_topology_partitions",
		"Partition count of the last batch's topology (0 while following and no topology exists).")
	mismatchDesc = partitionDesc("projectionist_topology_mismatch",
		"1 while the worker was started with a partition count (TOTAL_PARTITIONS) and runs under another one, because another process switched the topology, else 0.")
	idleDesc = partitionDesc("projectionist_idle",
		"1 while the partition is outside the projection's topology and waits for it to grow, else 0.")
	fetchedDesc = partitionDesc("projectionist_events_fetched_total",
		"Events of the partition and the projection's scope read from the log in batches that completed: handled, skipped or set aside.")
	skippedDesc = partitionDesc("projectionist_events_skipped_total",
		"Events read but not handled because an earlier topology generation already applied them (after a rescale).")
	lagDesc = partitionDesc("projectionist_lag_events",
		"Events in the partition's scope after its read position, measured every METRICS_INTERVAL: exact while among the first 1000000 events after it (of any scope or partition), a lower bound beyond. It includes events an earlier topology generation applied, which the partition will skip.")
	lagSecondsDesc = partitionDesc("projectionist_lag_seconds",
		"Age of the oldest event in the partition's scope after its read position, on the database's clock, measured every METRICS_INTERVAL; 0 when caught up.")
	lagSampledDesc = partitionDesc("projectionist_lag_sampled_timestamp_seconds",
		"Unix time when projectionist_lag_events and projectionist_lag_seconds were last measured; older than METRICS_INTERVAL while the measurement fails.")
	deadLettersDesc = partitionDesc("projectionist_dead_letters",
		"Dead letters of the projection, over all its partitions (every partition reports the same count: aggregate with max by (projection)), measured every METRICS_INTERVAL.")
	wakeupsDesc = partitionDesc("projectionist_wakeups_total",
		"Times a notification of a commit woke the caught-up partition before its poll interval ran out.")
	stallDesc = partitionDesc("projectionist_horizon_stall_seconds",
		"Seconds the oldest transaction holding a transaction id (pg_stat_activity.backend_xid, or a prepared transaction) has been open, measured every METRICS_INTERVAL; no processor can read past it. 0 if none. Complete only if the worker's role may read every session (pg_read_all_stats).")

	// The whole worker's series.
	databaseUpDesc = workerDesc("projectionist_database_up",
		"1 if the database answered the worker's last metrics round trip (every METRICS_INTERVAL), else 0.")
	notificationsDesc = workerDesc("projectionist_listener_notifications_total",
		"Notifications the worker's listening connection received (one per appending statement, folded per transaction).")
	reconnectsDesc = workerDesc("projectionist_listener_reconnects_total",
		"Times the worker's listening connection was lost (or could not be opened) and opened again; meanwhile the partitions poll at the poll interval.")
	listeningDesc = workerDesc("projectionist_listener_connected",
		"1 while the worker's listening connection is open, else 0 (and 0 with WAKEUPS=poll).")
	wakeupsEnabledDesc = workerDesc("projectionist_listener_notifications_enabled",
		"1 if the worker's listening connection saw projectionist.wakeups = on for its database and role when it last connected, else 0 (then the partitions poll at the poll interval; 0 with WAKEUPS=poll).")
)

// partitionDesc describes a series of one partition: labelled with labels,
// then extra.
func partitionDesc(name, help string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, slices.Concat(labels, extra), nil)
}

// workerDesc describes a series of the whole worker, without labels.
func workerDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, nil, nil)
}

// newBatchDuration returns the histogram fed by OnBatch.
func newBatchDuration() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "projectionist_batch_duration_seconds",
		Help:    "Wall time of committed batches, from taking a connection to the commit.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1ms .. 8s
	}, labels)
}

// newRegistry returns the registry /metrics serves: the worker's metrics,
// the build information, the connection pool's (pgxpool_*), the Go
// runtime's and the process's, and cfg.Collectors.
func (w *worker) newRegistry() (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "projectionist_build_info",
		Help:        "Always 1; its labels are the worker program's version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": w.cfg.Version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo,
		w.batchDuration,
		pgxpoolprometheus.NewCollector(w.pool, nil),
		statsCollector{w},
	)
	for i, c := range w.cfg.Collectors {
		if c == nil {
			return nil, fmt.Errorf("%w: Collectors[%d] is nil", ErrInvalidConfig, i)
		}
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("%w: registering Collectors[%d]: %v", ErrInvalidConfig, i, err)
		}
	}
	return reg, nil
}

// statsCollector exports the processors' Stats and the listener's, and
// the sampler's last measurements (sampler.go). It sends no query: a
// scrape costs the database nothing.
type statsCollector struct{ w *worker }

func (c statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{handledDesc, batchesDesc, poisonedDesc, positionDesc,
		generationDesc, partitionsDesc, mismatchDesc, idleDesc, fetchedDesc, skippedDesc,
		lagDesc, lagSecondsDesc, lagSampledDesc, deadLettersDesc, stallDesc, databaseUpDesc,
		wakeupsDesc, notificationsDesc, reconnectsDesc, listeningDesc, wakeupsEnabledDesc} {
		ch <- d
	}
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	up, stall, sampled, _ := c.w.samples.snapshot()
	policy := c.w.cfg.ErrorPolicy.String()
	var ls projection.ListenerStats
	if c.w.listener != nil {
		ls = c.w.listener.Stats()
	}
	ch <- prometheus.MustNewConstMetric(notificationsDesc, prometheus.CounterValue, float64(ls.Notifications))
	ch <- prometheus.MustNewConstMetric(reconnectsDesc, prometheus.CounterValue, float64(ls.Reconnects))
	ch <- prometheus.MustNewConstMetric(listeningDesc, prometheus.GaugeValue, boolFloat(ls.Connected))
	ch <- prometheus.MustNewConstMetric(wakeupsEnabledDesc, prometheus.GaugeValue, boolFloat(ls.NotificationsEnabled))
	// A measurement that never succeeded is left out rather than
	// reported as zero.
	if up.ok {
		ch <- prometheus.MustNewConstMetric(databaseUpDesc, prometheus.GaugeValue, up.value)
	}
	for i, p := range c.w.procs {
		st := p.processor.Stats()
		metric := func(d *prometheus.Desc, t prometheus.ValueType, v float64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, t, v, append([]string{p.name, p.partition}, extra...)...)
		}
		gauge := func(d *prometheus.Desc, m measured) {
			if m.ok {
				metric(d, prometheus.GaugeValue, m.value)
			}
		}
		metric(handledDesc, prometheus.CounterValue, float64(st.EventsHandled))
		metric(fetchedDesc, prometheus.CounterValue, float64(st.EventsFetched))
		metric(skippedDesc, prometheus.CounterValue, float64(st.EventsSkipped))
		metric(batchesDesc, prometheus.CounterValue, float64(st.Batches))
		metric(wakeupsDesc, prometheus.CounterValue, float64(st.Wakeups))
		metric(poisonedDesc, prometheus.CounterValue, float64(st.EventsPoisoned), policy)
		metric(positionDesc, prometheus.GaugeValue, float64(st.Position.TransactionID))
		metric(generationDesc, prometheus.GaugeValue, float64(st.Generation))
		metric(partitionsDesc, prometheus.GaugeValue, float64(st.TotalPartitions))
		metric(idleDesc, prometheus.GaugeValue, boolFloat(st.Idle))
		metric(mismatchDesc, prometheus.GaugeValue, boolFloat(p.mismatch(st)))
		gauge(stallDesc, stall)
		if i >= len(sampled) {
			continue // no round yet
		}
		ps := sampled[i]
		gauge(lagDesc, ps.lagEvents)
		gauge(lagSecondsDesc, ps.lagSeconds)
		if ps.lagEvents.ok {
			metric(lagSampledDesc, prometheus.GaugeValue, float64(ps.lagAt.UnixNano())/1e9)
		}
		gauge(deadLettersDesc, ps.deadLetters)
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
