// Package runner runs several projections, or several partitions of one
// projection, in one process.
//
// Every projection runs in its own goroutine with its own checkpoint. The
// runner is fail-fast: the first projection to fail cancels all the others,
// and Run returns that first error, naming the projection.
//
// Thread safety: when one projection instance runs on several partitions
// ([RunProjectionPartitions]), its Handle method is called from several
// goroutines at once. A projection that only writes through the batch's
// transaction is safe; one that keeps state in its own fields must guard it
// (sync/atomic, a mutex).
//
// Connections: every batch holds one of the pool's connections for its
// whole transaction. Give the pool at least as many connections as
// processors run at once (pgxpool's default is max(4, GOMAXPROCS); set
// pool_max_conns in the DSN), or they take turns.
//
// Wakeups: [RunMultipleProjections] and the RunProjectionPartitions
// functions give all their processors one [projection.Listener], so the
// process holds one listening connection (beside the pool) however many
// processors it runs. Processors built by the caller for [Runner.Run]
// share one only if their configs name the same Listener; one left nil
// opens its own.
package runner

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/projectionist/projectionist/pkg/projection"
)

// ProjectionConfig pairs a projection with the config of its processor.
type ProjectionConfig struct {
	// Projection is the projection to run. Required.
	Projection projection.Projection
	// ProcessorConfig configures its processor; start from
	// projection.DefaultProcessorConfig().
	ProcessorConfig projection.ProcessorConfig
}

// ProjectionRunner pairs a projection with a processor built for it.
type ProjectionRunner struct {
	// Projection is the projection to run. Required.
	Projection projection.Projection
	// Processor runs it. Required.
	Processor *projection.Processor
}

// Runner runs projection runners together, fail-fast.
type Runner struct{}

// New returns a Runner.
func New() *Runner { return &Runner{} }

// Run runs every runner until ctx is cancelled (then returns nil once all
// have stopped) or one of them fails (then cancels the others and returns
// the failure, naming its projection and partition). It stops at the first
// failure, a lost connection included; [Runner.RunSupervised] rides those
// out.
func (r *Runner) Run(ctx context.Context, runners []ProjectionRunner) error {
	return r.all(ctx, runners, (*projection.Processor).Run)
}

// CatchUp runs every runner until each has caught up (see
// [projection.Processor.CatchUp]: every event committed before CatchUp was
// called is handled), then returns nil. It is fail-fast like Run: the
// first failure cancels the others and is returned. If ctx ends first,
// CatchUp returns an error matching ctx's.
func (r *Runner) CatchUp(ctx context.Context, runners []ProjectionRunner) error {
	return r.all(ctx, runners, (*projection.Processor).CatchUp)
}

// RunSupervised is Run under [projection.Supervise]: after a retryable
// failure (a lost connection, a database restart) every runner is started
// again with capped exponential backoff; it returns nil when ctx is
// cancelled, or a poison event's *projection.HandlerError (under
// projection.ErrorPolicyStop) or a configuration error. Unless cfg sets
// Progress, the backoff starts over after every attempt in which any
// processor completed a batch.
func (r *Runner) RunSupervised(ctx context.Context, runners []ProjectionRunner, cfg projection.SupervisorConfig) error {
	if err := validate(runners); err != nil {
		return err
	}
	if cfg.Progress == nil {
		cfg.Progress = func() int64 {
			var sum int64
			for _, pr := range runners {
				sum += pr.Processor.Stats().Batches
			}
			return sum
		}
	}
	return projection.Supervise(ctx, cfg, func(ctx context.Context) error { return r.Run(ctx, runners) })
}

func (r *Runner) all(ctx context.Context, runners []ProjectionRunner, run func(*projection.Processor, context.Context, projection.Projection) error) error {
	if err := validate(runners); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, pr := range runners {
		// Processor errors name their projection and partition already.
		g.Go(func() error { return run(pr.Processor, ctx, pr.Projection) })
	}
	return g.Wait()
}

// validate checks runners before anything runs.
func validate(runners []ProjectionRunner) error {
	if len(runners) == 0 {
		return fmt.Errorf("runner: %w: nothing to run", projection.ErrInvalidConfig)
	}
	seen := map[string]int{}
	for i, pr := range runners {
		if pr.Projection == nil {
			return fmt.Errorf("runner: runner %d: %w: projection is nil", i, projection.ErrInvalidConfig)
		}
		if pr.Processor == nil {
			return fmt.Errorf("runner: runner %d (projection %q): %w: processor is nil", i, pr.Projection.Name(), projection.ErrInvalidConfig)
		}
		cfg := pr.Processor.Config()
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("runner: projection %q: %w", pr.Projection.Name(), err)
		}
		// Two runners on one checkpoint would just take turns; that is
		// never what was meant.
		key := fmt.Sprintf("%s\x00%d", pr.Projection.Name(), cfg.PartitionKey)
		if j, dup := seen[key]; dup {
			return fmt.Errorf("runner: %w: runners %d and %d both run projection %q partition %d",
				projection.ErrInvalidConfig, j, i, pr.Projection.Name(), cfg.PartitionKey)
		}
		seen[key] = i
	}
	return nil
}

// RunMultipleProjections runs several projections in one process, each with
// its own processor config and checkpoint, sharing the pool and one
// [projection.Listener] (unless a config names its own). It returns nil
// when ctx is cancelled, or the first projection's failure after stopping
// the rest.
func RunMultipleProjections(ctx context.Context, pool *pgxpool.Pool, store *projection.Store, configs []ProjectionConfig) error {
	runners := make([]ProjectionRunner, len(configs))
	l := projection.NewListener(pool, nil)
	for i, c := range configs {
		pc := c.ProcessorConfig
		if pc.Listener == nil {
			pc.Listener = l
		}
		runners[i] = ProjectionRunner{Projection: c.Projection, Processor: projection.NewProcessor(pool, store, pc)}
	}
	return New().Run(ctx, runners)
}

// RunProjectionPartitions runs partitions 0..partitions-1 of one projection
// in one process, with the default processor config. The projection's
// Handle is called concurrently from every partition: see the package
// documentation on thread safety. It returns nil when ctx is cancelled, or
// the first partition's failure after stopping the rest.
func RunProjectionPartitions(ctx context.Context, pool *pgxpool.Pool, store *projection.Store, proj projection.Projection, partitions int) error {
	return RunProjectionPartitionsWithConfig(ctx, pool, store, proj, partitions, projection.DefaultProcessorConfig())
}

// RunProjectionPartitionsWithConfig is [RunProjectionPartitions] with a
// processor config for every partition (batch size, poll interval,
// logger, ...); its PartitionKey and TotalPartitions are set per
// partition.
func RunProjectionPartitionsWithConfig(ctx context.Context, pool *pgxpool.Pool, store *projection.Store, proj projection.Projection, partitions int, cfg projection.ProcessorConfig) error {
	if partitions < 1 {
		return fmt.Errorf("runner: %w: partitions is %d, must be at least 1", projection.ErrInvalidConfig, partitions)
	}
	runners := make([]ProjectionRunner, partitions)
	if cfg.Listener == nil {
		cfg.Listener = projection.NewListener(pool, cfg.Logger)
	}
	for k := range partitions {
		c := cfg
		c.PartitionKey, c.TotalPartitions = k, partitions
		runners[k] = ProjectionRunner{Projection: proj, Processor: projection.NewProcessor(pool, store, c)}
	}
	return New().Run(ctx, runners)
}
