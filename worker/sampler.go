package worker

import (
	"context"
	"sync"
	"time"

	"github.com/projectionist/projectionist/internal/dbconn"
	"github.com/projectionist/projectionist/pkg/projection"
)

// The sampler measures, every MetricsInterval, what /metrics reports from
// the database: a scrape reads the last measurements and sends no query,
// so however often Prometheus (or anyone) scrapes, the database sees one
// round of these statements per interval.

// measured is one measurement: ok once it has succeeded. A failed
// measurement keeps the last value that succeeded.
type measured struct {
	ok    bool
	value float64
}

// procSample is what the sampler measured for one processor.
type procSample struct {
	lagEvents, lagSeconds, deadLetters measured
	// lagAt is when the lag was last measured, zero if never.
	lagAt time.Time
}

// samples are the sampler's last measurements, for statsCollector.
type samples struct {
	mu sync.Mutex
	// rounds counts completed rounds.
	rounds int64
	// up: the last round's ping answered; ok once a round has run.
	up    measured
	stall measured
	procs []procSample // by index of worker.procs
}

// snapshot returns a copy of the samples.
func (s *samples) snapshot() (up, stall measured, procs []procSample, rounds int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up, s.stall, append([]procSample(nil), s.procs...), s.rounds
}

// runSampler measures at once and then every MetricsInterval until ctx is
// cancelled, and once more as soon as the schema is migrated (sampleSoon),
// so that a fresh database has its lag measured before the next interval.
// A round that takes longer than the interval delays the next.
func (w *worker) runSampler(ctx context.Context) {
	t := time.NewTicker(w.cfg.MetricsInterval)
	defer t.Stop()
	for {
		w.sampleRound(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.sampleNow:
		}
	}
}

// sampleSoon asks the sampler for a round now, unless one is asked for.
func (w *worker) sampleSoon() {
	select {
	case w.sampleNow <- struct{}{}:
	default:
	}
}

// sampleRound runs one round: a ping, and if the database answers, the
// horizon stall and each processor's lag and dead letters, each statement
// within StatementTimeout. Measurements fail one by one (logged at DEBUG):
// a role that may not read some table loses that metric, not the others.
func (w *worker) sampleRound(ctx context.Context) {
	bounded := func(f func(ctx context.Context) error) error {
		sctx, cancel := context.WithTimeout(ctx, w.cfg.StatementTimeout)
		defer cancel()
		return f(sctx)
	}
	up := dbconn.Ping(ctx, w.pool, w.cfg.StatementTimeout) == nil
	var stall measured
	procs := make([]procSample, len(w.procs))
	if up {
		err := bounded(func(ctx context.Context) (err error) {
			stall.value, err = w.horizonStall(ctx)
			return err
		})
		if stall.ok = err == nil; !stall.ok {
			w.log.Debug("worker metrics: reading the horizon stall", errAttr(w.redact.Error(err)))
		}
		for i, p := range w.procs {
			procs[i] = w.sampleProc(ctx, p, bounded)
		}
	}
	if ctx.Err() != nil {
		return // cut short by the shutdown: not a measurement
	}

	w.samples.mu.Lock()
	defer w.samples.mu.Unlock()
	s := &w.samples
	s.rounds++
	s.up = measured{ok: true, value: boolFloat(up)}
	if stall.ok {
		s.stall = stall
	}
	if s.procs == nil {
		s.procs = make([]procSample, len(w.procs))
	}
	for i, ps := range procs {
		if ps.lagEvents.ok {
			s.procs[i].lagEvents, s.procs[i].lagSeconds, s.procs[i].lagAt = ps.lagEvents, ps.lagSeconds, ps.lagAt
		}
		if ps.deadLetters.ok {
			s.procs[i].deadLetters = ps.deadLetters
		}
	}
}

// sampleProc measures one processor's lag, from its own read position
// (ahead of the stored checkpoint while idle) once it has run a batch and
// from the stored checkpoint before, within its projection's scope; and
// its projection's dead letters.
func (w *worker) sampleProc(ctx context.Context, p *proc, bounded func(func(context.Context) error) error) procSample {
	var ps procSample
	q := projection.LagQuery{Projection: p.name, PartitionKey: w.cfg.PartitionKey,
		AggregateTypes: p.aggregateTypes, BoundedContexts: p.boundedContexts}
	if st := p.processor.Stats(); st.Batches > 0 {
		q.After = &st.Position
	}
	var lag projection.PartitionLag
	err := bounded(func(ctx context.Context) (err error) {
		lag, err = projection.GetPartitionLag(ctx, w.pool, q)
		return err
	})
	if err == nil {
		ps.lagEvents = measured{ok: true, value: float64(lag.Events)}
		ps.lagSeconds = measured{ok: true, value: lag.Age().Seconds()}
		ps.lagAt = w.cfg.Clock.Now()
	} else {
		w.log.Debug("worker metrics: reading the lag", "projection", p.name, errAttr(w.redact.Error(err)))
	}
	var n int64
	err = bounded(func(ctx context.Context) (err error) {
		n, err = projection.CountDeadLetters(ctx, w.pool, p.name)
		return err
	})
	if err == nil {
		ps.deadLetters = measured{ok: true, value: float64(n)}
	} else {
		w.log.Debug("worker metrics: counting dead letters", "projection", p.name, errAttr(w.redact.Error(err)))
	}
	return ps
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
