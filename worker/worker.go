// Package worker is the runtime a projectionist pod runs: it reads its
// configuration from flags and environment variables, runs projections
// with the checkpointed processor of package projection, serves health,
// readiness and Prometheus metrics, rides out database outages, and shuts
// down gracefully.
//
// [Main] is a complete worker program around the caller's projections:
//
//	func main() { worker.Main(UserCount{}, Revenue{}) }
//
// [ParseConfig] and [Run] are its parts, for programs that need more
// control.
//
// # Partitions and topology
//
// The partition key is PARTITION_KEY or else the ordinal suffix of
// POD_NAME, so each pod of a StatefulSet runs its own partition. Without
// TOTAL_PARTITIONS the worker follows the partition count recorded in the
// database, which the operator changes ([projection.TopologyFollow]); a key
// outside it idles, not ready, until the count grows. With
// TOTAL_PARTITIONS=n the worker switches the count to n itself when it
// starts ([projection.TopologyApply]): separate processes without an
// operator.
//
// # Rebuilds
//
// When it starts, before any batch, the worker carries out each of its
// projections' pending reset requests ([projection.ApplyPendingReset]):
// the operator makes one for a Projection's spec.rebuildToken, with the
// worker pods stopped. A projection that implements [projection.Resetter]
// has its Reset hook run, with its checkpoints deleted in the same
// transaction, and replays the log; one that does not has the request
// refused (recorded for the operator, logged at WARN) and runs on. So a
// worker built with [Main] around a user's projections rebuilds them with
// no extra code beyond the hook.
//
// # Failures
//
// A lost database stops the processors, whose batches in flight roll back;
// the worker retries with capped exponential backoff, logging when the
// projections stop and when they run again rather than on every attempt,
// and is not ready meanwhile. A poison event under the stop policy is not
// retried: Run returns a [*projection.HandlerError] naming the projection,
// the partition and the event. Passwords in connection strings are masked
// in every log line and error ([RedactDSN]).
//
// # HTTP
//
// /healthz answers 200 while the process runs. /readyz answers 200 once
// every projection has completed a batch since the worker (re)connected,
// and 503 with a one-line reason while the database is unreachable, before
// that first batch, while a partition is idle, and during shutdown. A
// worker started with TOTAL_PARTITIONS that runs under another count
// (another standalone process switched the projection) stays ready, since
// it applies its share exactly, but its 200 body says "ok (warning: ...)",
// it logs a WARN once, and projectionist_topology_mismatch is 1.
// /metrics serves the projectionist_* metrics, labelled by projection and
// partition, and the connection pool's pgxpool_* metrics, from a registry
// of the worker's own. What comes from the database (the lag in events and
// seconds, the dead letters, the horizon stall, whether the database
// answers) is measured every MetricsInterval (METRICS_INTERVAL, 10s), not
// per scrape: a scrape sends no query.
package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/projectionist/projectionist/internal/dbconn"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/pkg/projection/runner"
)

// Retries after a failure wait from about retryInitial, doubling, up to
// retryMax, each with ±50% jitter so that the pods of a StatefulSet do not
// reconnect in step: the library's defaults.
const (
	retryInitial = projection.DefaultRetryInitialInterval
	retryMax     = projection.DefaultRetryMaxInterval
)

// pingTimeout bounds the database check of a readiness probe, below
// Kubernetes' default probe timeout of 1s.
const pingTimeout = 800 * time.Millisecond

// Run runs the configured projections until ctx is cancelled, then stops
// them (their batches in flight roll back) and the HTTP server, and returns
// nil, within cfg.ShutdownTimeout. It applies the schema migrations first.
// It retries a lost database for as long as it takes; it returns an error
// for a poison event under [projection.ErrorPolicyStop] (a
// [*projection.HandlerError]), for a configuration that cannot work
// (matching [ErrInvalidConfig] or [projection.ErrInvalidConfig], such as a
// projection name it was not given), or when the HTTP server fails.
func Run(ctx context.Context, cfg Config, projections ...projection.Projection) error {
	w, err := newWorker(cfg, projections)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", w.cfg.HTTPAddr)
	if err != nil {
		w.pool.Close()
		return fmt.Errorf("serving HTTP: %w", err)
	}
	return w.run(ctx, ln)
}

// worker is one Run.
type worker struct {
	cfg  Config
	log  *slog.Logger
	pool *pgxpool.Pool
	// listener wakes every processor of the worker (nil under
	// projection.WakeupsPoll): one connection, beside the pool.
	listener      *projection.Listener
	procs         []*proc
	batchDuration *prometheus.HistogramVec
	registry      *prometheus.Registry // what /metrics serves
	// samples are the sampler's measurements, which /metrics reports;
	// sampleNow asks it for a round (buffered, 1).
	samples   samples
	sampleNow chan struct{}
	migrated  bool // schema migrated and Setup done; by attempt only
	// redact removes the database's password from errors and readiness.
	redact *dbconn.Redactor

	mu sync.Mutex
	// failure is why the projections are not running, from the moment an
	// attempt fails until a batch completes in a later one; nil otherwise.
	failure  error
	failedAt time.Time
	stopping bool
}

// proc is one projection's processor.
type proc struct {
	projection      projection.Projection
	processor       *projection.Processor
	name, partition string
	// The projection's scope, nil for all (projection.ScopedProjection).
	aggregateTypes, boundedContexts []string
	// attemptBatches is Stats().Batches when the current attempt
	// started: readiness waits for one more. Guarded by worker.mu.
	attemptBatches int64
	// configured is TOTAL_PARTITIONS, 0 when following the database.
	configured int
	// mismatchWarned is set once the WARN about running under another
	// partition count than configured was logged. Guarded by worker.mu.
	mismatchWarned bool
}

// mismatch reports whether a processor configured with a partition count
// runs under another one: another standalone process switched the
// projection after this one started. The worker carries on, exactly, with
// the database's count (DESIGN.md rule 5), but whoever set
// TOTAL_PARTITIONS should know their setting is not what runs.
func (p *proc) mismatch(st projection.Stats) bool {
	return p.configured > 0 && st.TotalPartitions > 0 && st.TotalPartitions != p.configured
}

// mismatchReason is the warning /readyz and the log give for a mismatch.
func (p *proc) mismatchReason(st projection.Stats) string {
	return fmt.Sprintf("projection %q partition %s: configured with %s (%s) but running under %d (generation %d): another process switched the topology",
		p.name, p.partition, EnvTotalPartitions, strconv.Itoa(p.configured), st.TotalPartitions, st.Generation)
}

func newWorker(cfg Config, projections []projection.Projection) (*worker, error) {
	cfg = cfg.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = cfg.newLogger(os.Stderr)
	}
	selected, err := selectProjections(cfg.Projections, projections)
	if err != nil {
		return nil, err
	}
	if cfg.ShutdownTimeout < 0 {
		return nil, fmt.Errorf("%w: ShutdownTimeout is %s, must not be negative", ErrInvalidConfig, cfg.ShutdownTimeout)
	}
	if cfg.MetricsInterval < 0 {
		return nil, fmt.Errorf("%w: MetricsInterval is %s, must not be negative", ErrInvalidConfig, cfg.MetricsInterval)
	}
	// One connection per processor, one for readiness, one for metrics.
	// The listener (wakeups) has one of its own, outside the pool.
	pool, err := dbconn.NewPool(cfg.DatabaseURL, dbconn.Options{Application: "projectionist-worker",
		MinMaxConns: int32(len(selected) + 2), ConnectTimeout: cfg.ConnectTimeout})
	if err != nil {
		source := EnvDatabaseURL
		if cfg.DatabaseURL == "" {
			source = "the PG* variables" // pgx read PGHOST, PGPORT, ...
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, source, err)
	}

	w := &worker{cfg: cfg, log: cfg.Logger, pool: pool, batchDuration: newBatchDuration(), redact: redactor(cfg.DatabaseURL),
		sampleNow: make(chan struct{}, 1)}
	if cfg.Wakeups == projection.WakeupsListen {
		w.listener = projection.NewListener(pool, cfg.Logger)
	}
	if w.registry, err = w.newRegistry(); err != nil {
		pool.Close()
		return nil, err
	}
	for _, proj := range selected {
		p := &proc{projection: proj, name: proj.Name(), partition: strconv.Itoa(cfg.PartitionKey), configured: cfg.TotalPartitions}
		if sp, ok := proj.(projection.ScopedProjection); ok {
			p.aggregateTypes, p.boundedContexts = nilIfEmpty(sp.AggregateTypes()), nilIfEmpty(sp.BoundedContexts())
		}
		pc := projection.DefaultProcessorConfig()
		pc.BatchSize, pc.PollInterval, pc.ErrorPolicy = cfg.BatchSize, cfg.PollInterval, cfg.ErrorPolicy
		pc.StatementTimeout, pc.BatchTimeout = cfg.StatementTimeout, cfg.BatchTimeout
		pc.Wakeups, pc.WakeupPollInterval, pc.Listener = cfg.Wakeups, cfg.WakeupPollInterval, w.listener
		pc.PartitionKey, pc.Topology = cfg.PartitionKey, projection.TopologyFollow
		if cfg.TotalPartitions > 0 {
			pc.TotalPartitions, pc.Topology = cfg.TotalPartitions, projection.TopologyApply
		}
		pc.Logger, pc.Clock = cfg.Logger, cfg.Clock
		pc.OnBatch = func(r projection.BatchResult) { w.batchDone(p, r) }
		if err := pc.Validate(); err != nil {
			pool.Close()
			return nil, fmt.Errorf("projection %q: %w", p.name, err)
		}
		p.processor = projection.NewProcessor(pool, nil, pc)
		w.procs = append(w.procs, p)
	}
	// Without a connection string or a PG* variable that names a server,
	// pgx would try a local socket forever: the same usage error as every
	// CLI subcommand's, after the worker's other checks.
	if err := dbconn.Require(cfg.DatabaseURL, os.Getenv); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return w, nil
}

// selectProjections returns the projections named, or all of them.
func selectProjections(names []string, projections []projection.Projection) ([]projection.Projection, error) {
	byName := map[string]projection.Projection{}
	for _, p := range projections {
		if p == nil {
			return nil, fmt.Errorf("%w: a projection is nil", ErrInvalidConfig)
		}
		if _, dup := byName[p.Name()]; dup {
			return nil, fmt.Errorf("%w: two projections are named %q", ErrInvalidConfig, p.Name())
		}
		byName[p.Name()] = p
	}
	if len(byName) == 0 {
		return nil, fmt.Errorf("%w: no projections to run", ErrInvalidConfig)
	}
	if len(names) == 0 {
		return projections, nil
	}
	var selected []projection.Projection
	for _, name := range names {
		p, ok := byName[name]
		if !ok {
			known := slices.Sorted(maps.Keys(byName))
			return nil, fmt.Errorf("%w: unknown projection %q; this worker has %s", ErrInvalidConfig, name, strings.Join(known, ", "))
		}
		selected = append(selected, p)
	}
	return selected, nil
}

// run serves HTTP on ln and runs the projections until ctx is cancelled or
// a failure that retrying cannot cure.
func (w *worker) run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: w.handler(), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	names := make([]string, len(w.procs))
	for i, p := range w.procs {
		names[i] = p.name
	}
	w.log.Info("worker started", "version", w.cfg.Version, "projections", names, "partition", w.cfg.PartitionKey,
		"totalPartitions", w.cfg.TotalPartitions, "errorPolicy", w.cfg.ErrorPolicy.String(), "wakeups", w.cfg.Wakeups.String(), "httpAddr", ln.Addr().String())

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- w.runProjections(runCtx) }()
	sampled := make(chan struct{})
	go func() { defer close(sampled); w.runSampler(runCtx) }()

	var err error
	running := true
	select {
	case err = <-ran:
		running = false
	case err = <-served:
		err = fmt.Errorf("serving HTTP: %w", err)
	case <-ctx.Done():
	}
	w.mu.Lock()
	w.stopping = true
	w.mu.Unlock()
	w.log.Info("worker stopping")
	cancel()

	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), w.cfg.ShutdownTimeout)
	defer cancelShutdown()
	if running {
		select {
		case <-ran: //nolint:errcheck // ran's error was reported where it happened; this only waits
		case <-shutdownCtx.Done():
			// Exiting closes the connections: the server rolls the
			// batches in flight back. Closing the pool would wait for them.
			_ = srv.Close()
			return fmt.Errorf("projections did not stop within the shutdown timeout of %s", w.cfg.ShutdownTimeout)
		}
	}
	select {
	case <-sampled:
	case <-shutdownCtx.Done():
	}
	if serr := srv.Shutdown(shutdownCtx); serr != nil {
		_ = srv.Close()
	}
	w.pool.Close()
	if err != nil {
		return w.redact.Error(err)
	}
	w.log.Info("worker stopped")
	return nil
}

// runProjections runs the processors under projection.Supervise: any
// failure but a poison event or a bad configuration is retried with capped
// exponential backoff, until ctx is cancelled.
func (w *worker) runProjections(ctx context.Context) error {
	return projection.Supervise(ctx, projection.SupervisorConfig{
		InitialInterval: retryInitial, MaxInterval: retryMax,
		Progress: w.batches,
		OnRetry:  func(err error, _ time.Duration) { w.failed(err) },
		Pool:     w.pool,
	}, func(ctx context.Context) error {
		w.startAttempt()
		return w.attempt(ctx)
	})
}

// attempt connects, migrates the schema once, and runs every processor
// until one fails or ctx is cancelled. Checking the connection first keeps
// an outage from starting (and logging) every processor on every retry.
func (w *worker) attempt(ctx context.Context) error {
	if err := dbconn.Ping(ctx, w.pool, w.cfg.StatementTimeout); err != nil {
		return fmt.Errorf("connecting to the database: %w", err)
	}
	if !w.migrated {
		if err := w.setUp(ctx); err != nil {
			return err
		}
		w.migrated = true
		w.sampleSoon() // the lag can be measured now
	}
	runners := make([]runner.ProjectionRunner, len(w.procs))
	for i, p := range w.procs {
		runners[i] = runner.ProjectionRunner{Projection: p.projection, Processor: p.processor}
	}
	err := runner.New().Run(ctx, runners)
	if err == nil && ctx.Err() == nil {
		err = errors.New("projections stopped") // not expected: Run returns nil only when cancelled
	}
	return err
}

// startAttempt records every processor's batches so far, for readiness.
func (w *worker) startAttempt() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.procs {
		p.attemptBatches = p.processor.Stats().Batches
	}
}

func (w *worker) batches() int64 {
	var sum int64
	for _, p := range w.procs {
		sum += p.processor.Stats().Batches
	}
	return sum
}

// failed records a failed attempt, logging the first of a series and
// every change of state (say, from unreachable to not responding).
func (w *worker) failed(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	state := failureState(err)
	switch {
	case w.failure == nil:
		w.failedAt = w.cfg.Clock.Now()
		w.log.Warn("projections not running; retrying with backoff", "state", state, errAttr(w.redact.Error(err)))
	case failureState(w.failure) != state:
		w.log.Warn("projections still not running; retrying with backoff", "state", state, errAttr(w.redact.Error(err)))
	default:
		w.log.Debug("projections still not running; retrying with backoff", "state", state, errAttr(w.redact.Error(err)))
	}
	w.failure = err
}

// batchDone is every processor's OnBatch.
func (w *worker) batchDone(p *proc, r projection.BatchResult) {
	w.batchDuration.WithLabelValues(p.name, p.partition).Observe(r.Duration.Seconds())
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failure != nil {
		w.log.Info("projections running again", "downtime", w.cfg.Clock.Since(w.failedAt).Round(time.Millisecond).String())
		w.failure = nil
	}
	if !p.mismatchWarned && p.mismatch(r.Stats) {
		p.mismatchWarned = true
		w.log.Warn("worker running under another partition count than configured", "projection", p.name, "partition", p.partition,
			"configuredPartitions", p.configured, "totalPartitions", r.Stats.TotalPartitions, "generation", r.Stats.Generation)
	}
}

func (w *worker) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathHealthz, func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(rw, "ok\n")
	})
	mux.HandleFunc("GET "+PathReadyz, func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		reason, ok := w.ready(r.Context())
		if !ok {
			rw.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = io.WriteString(rw, reason+"\n")
	})
	mux.Handle("GET "+PathMetrics, promhttp.HandlerFor(w.registry, promhttp.HandlerOpts{}))
	return mux
}

// ready says whether the worker is ready and, if not, why.
func (w *worker) ready(ctx context.Context) (string, bool) {
	w.mu.Lock()
	failure, stopping := w.failure, w.stopping
	since := make([]int64, len(w.procs))
	for i, p := range w.procs {
		since[i] = p.attemptBatches
	}
	w.mu.Unlock()
	switch {
	case stopping:
		return "shutting down", false
	case failure != nil:
		return "not running (" + failureState(failure) + "), retrying: " + w.redact.String(failure.Error()), false
	}
	var warnings []string
	for i, p := range w.procs {
		st := p.processor.Stats()
		if p.mismatch(st) {
			warnings = append(warnings, p.mismatchReason(st))
		}
		if st.Batches <= since[i] {
			return fmt.Sprintf("projection %q partition %s: no batch completed yet", p.name, p.partition), false
		}
		if st.Idle {
			return fmt.Sprintf("projection %q partition %s: idle: %s", p.name, p.partition, outside(st)), false
		}
	}
	if err := dbconn.Ping(ctx, w.pool, pingTimeout); err != nil {
		return failureState(err) + ": " + w.redact.String(err.Error()), false
	}
	// A mismatch is a warning, not a failure: the partition applies its
	// share of the database's count exactly, so it stays ready.
	if len(warnings) > 0 {
		return "ok (warning: " + strings.Join(warnings, "; ") + ")", true
	}
	return "ok", true
}

// outside says how an idle partition is outside its projection's topology.
func outside(st projection.Stats) string {
	if st.TotalPartitions == 0 {
		return "the projection has no partition count in the database yet (set TOTAL_PARTITIONS on one worker, or create a Projection resource)"
	}
	if st.TotalPartitions == 1 {
		return fmt.Sprintf("outside the topology (generation %d has 1 partition)", st.Generation)
	}
	return fmt.Sprintf("outside the topology (generation %d has %d partitions)", st.Generation, st.TotalPartitions)
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}
