package projection

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults of SupervisorConfig's backoff. Retries wait from about
// DefaultRetryInitialInterval, doubling, up to DefaultRetryMaxInterval,
// each with ±50% jitter so that the processes of one deployment do not
// reconnect in step.
const (
	DefaultRetryInitialInterval = 500 * time.Millisecond
	DefaultRetryMaxInterval     = 15 * time.Second
)

// IsRetryable reports whether work that failed with err (a [Processor]'s
// Run or CatchUp, a runner's) may succeed if run again: true for a lost
// connection, a database that does not answer ([ErrTimeout]), a missing
// schema ([ErrNoSchema], until someone migrates), and any other failure of
// the database; false for a poison event under [ErrorPolicyStop] (the
// processor returns those, and only those, as a [*HandlerError]), for a
// configuration that cannot work (matching [ErrInvalidConfig], or a
// [*TopologyManagedError]: only a change of the processor's configuration
// helps), and for nil.
func IsRetryable(err error) bool {
	var herr *HandlerError
	var merr *TopologyManagedError
	return err != nil && !errors.As(err, &herr) && !errors.Is(err, ErrInvalidConfig) && !errors.As(err, &merr)
}

// SupervisorConfig configures [Supervise]. The zero value is a valid
// config.
type SupervisorConfig struct {
	// InitialInterval is about how long the first retry waits; each
	// consecutive failure doubles it. Must not be negative. Defaults to
	// DefaultRetryInitialInterval (500ms) when zero.
	InitialInterval time.Duration
	// MaxInterval caps the doubling. Must not be below InitialInterval.
	// Defaults to DefaultRetryMaxInterval (15s) when zero.
	MaxInterval time.Duration
	// Progress, if set, returns a count that grows while the supervised
	// work gets somewhere, such as the sum of its processors'
	// Stats().Batches: after an attempt during which it grew, the backoff
	// starts over from InitialInterval. Defaults to nil, with which the
	// backoff only grows ([Processor.RunSupervised] sets it).
	Progress func() int64
	// OnRetry, if set, is called after every retryable failure, before
	// the wait, with the failure and the wait. Defaults to nil.
	OnRetry func(err error, wait time.Duration)
	// Pool, if set, is reset (its idle connections closed) after every
	// retryable failure: what broke one connection (a restart, a network
	// cut, an administrator) usually broke the idle ones too. Defaults to
	// nil.
	Pool *pgxpool.Pool
	// Logger receives a Warn line for every retryable failure. Defaults
	// to discarding.
	Logger *slog.Logger
}

func (c SupervisorConfig) withDefaults() SupervisorConfig {
	c.InitialInterval = cmp.Or(c.InitialInterval, DefaultRetryInitialInterval)
	c.MaxInterval = cmp.Or(c.MaxInterval, DefaultRetryMaxInterval)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first problem with the config, once its zero
// fields stand for their defaults, wrapped around [ErrInvalidConfig].
func (c SupervisorConfig) Validate() error {
	c = c.withDefaults()
	if c.InitialInterval < 0 {
		return fmt.Errorf("%w: supervisor InitialInterval is %s, must not be negative", ErrInvalidConfig, c.InitialInterval)
	}
	if c.MaxInterval < c.InitialInterval {
		return fmt.Errorf("%w: supervisor MaxInterval is %s, must not be below InitialInterval %s", ErrInvalidConfig, c.MaxInterval, c.InitialInterval)
	}
	return nil
}

// Supervise calls run, and again after every retryable failure
// ([IsRetryable]) with capped exponential backoff, until ctx is cancelled
// (then it returns nil), run returns nil (then so does Supervise: a
// supervised CatchUp that finished), or run fails with an error that
// retrying cannot cure, which it returns: a [*HandlerError] under
// [ErrorPolicyStop], or an error matching [ErrInvalidConfig].
//
// run is typically a [Processor]'s Run or a runner's Run; package worker
// supervises its processors with it.
func Supervise(ctx context.Context, cfg SupervisorConfig, run func(ctx context.Context) error) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	retry := backoff.NewExponentialBackOff()
	retry.InitialInterval, retry.Multiplier, retry.MaxInterval = cfg.InitialInterval, 2, cfg.MaxInterval
	progress := cfg.Progress
	if progress == nil {
		progress = func() int64 { return 0 }
	}
	for {
		before := progress()
		err := run(ctx)
		switch {
		case ctx.Err() != nil || err == nil:
			return nil
		case !IsRetryable(err):
			return err
		case progress() > before:
			retry.Reset() // it ran: start the backoff over
		}
		wait := retry.NextBackOff()
		cfg.Logger.Warn("projection work failed; retrying with backoff", "wait", wait.Round(time.Millisecond).String(), "err", err)
		if cfg.OnRetry != nil {
			cfg.OnRetry(err, wait)
		}
		if cfg.Pool != nil {
			cfg.Pool.Reset()
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// RunSupervised is [Processor.Run] under [Supervise]: it rides out lost
// connections and database restarts, and returns nil when ctx is
// cancelled, or a poison event's [*HandlerError] (under
// [ErrorPolicyStop]) or a configuration error. Unless cfg sets them,
// the backoff starts over after every attempt that completed a batch
// (Progress) and the processor's pool is reset after every failure (Pool).
func (p *Processor) RunSupervised(ctx context.Context, proj Projection, cfg SupervisorConfig) error {
	if cfg.Progress == nil {
		cfg.Progress = func() int64 { return p.Stats().Batches }
	}
	if cfg.Pool == nil {
		cfg.Pool = p.pool
	}
	return Supervise(ctx, cfg, func(ctx context.Context) error { return p.Run(ctx, proj) })
}
