package worker

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/projectionist/projectionist/pkg/projection"
)

// scrapeTimeout bounds the queries a scrape runs.
const scrapeTimeout = 5 * time.Second

// lagCountLimit bounds the rows a lag query counts, so that a partition
// far behind does not make every scrape scan the rest of the log.
const lagCountLimit = 1_000_000

var (
	labels = []string{"projection", "partition"}

	handledDesc = prometheus.NewDesc("projectionist_events_handled_total",
		"Events handled in committed batches.", labels, nil)
	batchesDesc = prometheus.NewDesc("projectionist_batches_total",
		"Batches run to completion, with or without events.", labels, nil)
	poisonedDesc = prometheus.NewDesc("projectionist_events_poisoned_total",
		"Events whose Handle failed and that the error policy skipped or dead-lettered.",
		[]string{"projection", "partition", "policy"}, nil)
	positionDesc = prometheus.NewDesc("projectionist_checkpoint_transaction_id",
		"Transaction id of the partition's read position: events are read in (transaction id, global position) order, "+
			"and every event of an earlier transaction in the partition's scope has been handled.", labels, nil)
	generationDesc = prometheus.NewDesc("projectionist_topology_generation",
		"Topology generation of the last batch (0 while following and no topology exists).", labels, nil)
	partitionsDesc = prometheus.NewDesc("projectionist_topology_partitions",
		"Partition count of the last batch's topology (0 while following and no topology exists).", labels, nil)
	mismatchDesc = prometheus.NewDesc("projectionist_topology_mismatch",
		"1 while the worker was started with a partition count (TOTAL_PARTITIONS) and runs under another one, "+
			"because another process switched the topology, else 0.", labels, nil)
	idleDesc = prometheus.NewDesc("projectionist_idle",
		"1 while the partition is outside the projection's topology and waits for it to grow, else 0.", labels, nil)
	lagDesc = prometheus.NewDesc("projectionist_lag_events",
		"Events in the partition's scope after its read position: an exact count, queried at scrape time, "+
			"that saturates at 1000000. It includes events an earlier topology generation applied, which the partition will skip.", labels, nil)
	deadLettersDesc = prometheus.NewDesc("projectionist_dead_letters",
		"Dead letters of the projection, over all its partitions (every partition reports the same count: "+
			"aggregate with max by (projection)), queried at scrape time; saturates at 1000000.", labels, nil)
	wakeupsDesc = prometheus.NewDesc("projectionist_wakeups_total",
		"Times a notification of a commit woke the caught-up partition before its poll interval ran out.", labels, nil)
	notificationsDesc = prometheus.NewDesc("projectionist_listener_notifications_total",
		"Notifications the worker's listening connection received (one per appending statement, folded per transaction).", nil, nil)
	reconnectsDesc = prometheus.NewDesc("projectionist_listener_reconnects_total",
		"Times the worker's listening connection was lost (or could not be opened) and opened again; "+
			"meanwhile the partitions poll at the poll interval.", nil, nil)
	listeningDesc = prometheus.NewDesc("projectionist_listener_connected",
		"1 while the worker's listening connection is open, else 0 (and 0 with WAKEUPS=poll).", nil, nil)
	wakeupsEnabledDesc = prometheus.NewDesc("projectionist_listener_notifications_enabled",
		"1 if the worker's listening connection saw projectionist.wakeups = on for its database and role when it last connected, "+
			"else 0 (then the partitions poll at the poll interval; 0 with WAKEUPS=poll).", nil, nil)
	stallDesc = prometheus.NewDesc("projectionist_horizon_stall_seconds",
		"Seconds the oldest transaction holding a transaction id (pg_stat_activity.backend_xid, or a prepared transaction) "+
			"has been open, queried at scrape time; no processor can read past it. 0 if none. "+
			"Complete only if the worker's role may read every session (pg_read_all_stats).", labels, nil)
)

// newBatchDuration returns the histogram fed by OnBatch.
func newBatchDuration() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "projectionist_batch_duration_seconds",
		Help:    "Wall time of committed batches, from taking a connection to the commit.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1ms .. 8s
	}, labels)
}

// newRegistry returns the registry /metrics serves: the worker's metrics,
// the build information, the Go runtime's and the process's, and
// cfg.Collectors.
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

// statsCollector exports the processors' Stats, and the lag and the
// horizon stall, which it queries when scraped.
type statsCollector struct{ w *worker }

func (c statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{handledDesc, batchesDesc, poisonedDesc, positionDesc,
		generationDesc, partitionsDesc, mismatchDesc, idleDesc, lagDesc, deadLettersDesc, stallDesc,
		wakeupsDesc, notificationsDesc, reconnectsDesc, listeningDesc, wakeupsEnabledDesc} {
		ch <- d
	}
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	stall, stallErr := c.w.horizonStall(ctx)
	if stallErr != nil {
		c.w.log.Debug("worker metrics: reading the horizon stall", errAttr(stallErr))
	}
	policy := c.w.cfg.ErrorPolicy.String()
	var ls projection.ListenerStats
	if c.w.listener != nil {
		ls = c.w.listener.Stats()
	}
	ch <- prometheus.MustNewConstMetric(notificationsDesc, prometheus.CounterValue, float64(ls.Notifications))
	ch <- prometheus.MustNewConstMetric(reconnectsDesc, prometheus.CounterValue, float64(ls.Reconnects))
	ch <- prometheus.MustNewConstMetric(listeningDesc, prometheus.GaugeValue, boolFloat(ls.Connected))
	ch <- prometheus.MustNewConstMetric(wakeupsEnabledDesc, prometheus.GaugeValue, boolFloat(ls.NotificationsEnabled))
	for _, p := range c.w.procs {
		st := p.processor.Stats()
		metric := func(d *prometheus.Desc, t prometheus.ValueType, v float64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, t, v, append([]string{p.name, p.partition}, extra...)...)
		}
		metric(handledDesc, prometheus.CounterValue, float64(st.EventsHandled))
		metric(batchesDesc, prometheus.CounterValue, float64(st.Batches))
		metric(wakeupsDesc, prometheus.CounterValue, float64(st.Wakeups))
		metric(poisonedDesc, prometheus.CounterValue, float64(st.EventsPoisoned), policy)
		metric(positionDesc, prometheus.GaugeValue, float64(st.Position.TransactionID))
		metric(generationDesc, prometheus.GaugeValue, float64(st.Generation))
		metric(partitionsDesc, prometheus.GaugeValue, float64(st.TotalPartitions))
		metric(idleDesc, prometheus.GaugeValue, boolFloat(st.Idle))
		metric(mismatchDesc, prometheus.GaugeValue, boolFloat(p.mismatch(st)))
		if stallErr == nil {
			metric(stallDesc, prometheus.GaugeValue, stall)
		}
		// A metric that cannot be measured is left out rather than
		// reported as zero.
		if lag, err := c.w.lag(ctx, p, st.Position); err == nil {
			metric(lagDesc, prometheus.GaugeValue, float64(lag))
		} else {
			c.w.log.Debug("worker metrics: reading the lag", "projection", p.name, errAttr(err))
		}
		if n, err := c.w.deadLetters(ctx, p); err == nil {
			metric(deadLettersDesc, prometheus.GaugeValue, float64(n))
		} else {
			c.w.log.Debug("worker metrics: counting dead letters", "projection", p.name, errAttr(err))
		}
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// lagSQL counts a partition's events after a position, up to a limit. The
// partition count comes from the topology, so the count is right before
// the first batch too; a key outside the topology has no events.
// int8eq(a, b) is a = b hidden from the planner, as in the processor's
// query, so that it keeps the ordered index scan that stops at the LIMIT.
const lagSQL = `
	SELECT count(*) FROM (
		SELECT FROM projection_topology t
		JOIN events e ON (e.transaction_id, e.global_position) > ($3::xid8, $4::bigint)
		WHERE t.projection_name = $1 AND $2::int < t.total_partitions
		  AND int8eq(e.partition_hash % t.total_partitions, $2::bigint)
		  AND ($5::text[] IS NULL OR e.aggregate_type = ANY($5::text[]))
		  AND ($6::text[] IS NULL OR e.bounded_context = ANY($6::text[]))
		LIMIT $7) AS beyond`

func (w *worker) lag(ctx context.Context, p *proc, after projection.Position) (int64, error) {
	var n int64
	err := w.pool.QueryRow(ctx, lagSQL, p.name, w.cfg.PartitionKey, after.TransactionID, after.GlobalPosition,
		p.aggregateTypes, p.boundedContexts, lagCountLimit).Scan(&n)
	return n, err
}

// horizonStallSQL measures the oldest transaction that holds a transaction
// id: the horizon, below which processors read, cannot pass it.
const horizonStallSQL = `
	SELECT coalesce(extract(epoch FROM clock_timestamp() - min(started)), 0)::float8 FROM (
		SELECT xact_start AS started FROM pg_stat_activity WHERE backend_xid IS NOT NULL
		UNION ALL
		SELECT prepared FROM pg_prepared_xacts) AS writers`

func (w *worker) horizonStall(ctx context.Context) (float64, error) {
	var seconds float64
	err := w.pool.QueryRow(ctx, horizonStallSQL).Scan(&seconds)
	return seconds, err
}

// deadLettersSQL counts a projection's dead letters up to a limit: a range
// of the primary key's index, so a scrape costs what the projection's own
// dead letters cost, never the whole table.
const deadLettersSQL = `
	SELECT count(*) FROM (
		SELECT FROM projection_dead_letters WHERE projection_name = $1 LIMIT $2) AS parked`

func (w *worker) deadLetters(ctx context.Context, p *proc) (int64, error) {
	var n int64
	err := w.pool.QueryRow(ctx, deadLettersSQL, p.name, lagCountLimit).Scan(&n)
	return n, err
}
