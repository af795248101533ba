package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/demo"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/worker"
)

const workerHelp = `Usage: projectionist worker [flags]

Runs the built-in demo projections (user_count, revenue, activity_log, or
those PROJECTION names), one partition of each, until SIGTERM or SIGINT,
with health, readiness and metrics over HTTP. It creates the event store's
schema and the demo read models' tables first, waiting for the database if
it is not there yet.

The partition key is PARTITION_KEY, or the ordinal suffix of POD_NAME in a
StatefulSet. With TOTAL_PARTITIONS the worker switches the projections to
that many partitions when it starts, exactly; without it, it follows the
partition count recorded in the database (the operator's mode).

`

const workerExamples = `
Examples:
  # One worker for everything:
  DATABASE_URL='postgres://app@localhost:5432/app?sslmode=disable' projectionist worker

  # The separate-processes pattern: four partitions, one process each.
  PARTITION_KEY=0 TOTAL_PARTITIONS=4 HTTP_ADDR=:8080 projectionist worker
  PARTITION_KEY=1 TOTAL_PARTITIONS=4 HTTP_ADDR=:8081 projectionist worker
  ...

  # Only the activity log, text logs:
  projectionist worker --projection activity_log --log-format text
`

// runWorker runs `projectionist worker`: package worker's runtime with the
// built-in demo projections, demo.Projections(), after creating their
// tables (demo.EnsureSchema).
func (c *cli) runWorker(args []string) int {
	cfg, err := worker.ParseConfig(args, c.getenv)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(c.stdout, workerHelp)
		worker.Usage(c.stdout)
		fmt.Fprint(c.stdout, workerExamples)
		return exitOK
	}
	if err != nil {
		return c.fail("worker", &usageError{err.Error()})
	}
	cfg.Logger = workerLogger(c.stderr, cfg)

	if err := ensureDemoSchema(c.ctx, cfg); err != nil {
		return c.fail("worker", err)
	}
	err = worker.Run(c.ctx, cfg, demo.Projections()...)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, worker.ErrInvalidConfig), errors.Is(err, projection.ErrInvalidConfig):
		return c.fail("worker", &usageError{err.Error()})
	}
	return c.fail("worker", err)
}

// workerLogger is the logger worker.Run would make, built here so that
// ensureDemoSchema logs alike: cfg's format and level on w, passwords
// masked.
func workerLogger(w io.Writer, cfg worker.Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		switch v := a.Value; v.Kind() {
		case slog.KindString:
			a.Value = slog.StringValue(worker.RedactDSN(v.String()))
		case slog.KindAny:
			if err, ok := v.Any().(error); ok {
				a.Value = slog.StringValue(worker.RedactDSN(err.Error()))
			}
		}
		return a
	}}
	if cfg.LogFormat == worker.LogFormatText {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// ensureDemoSchema creates the demo read models' tables, waiting with
// capped exponential backoff while the database cannot be reached (logging
// once when it starts waiting and once when it is done), as the worker
// does for its own connection. An error from the server itself, such as a
// missing privilege, is returned at once. A cancelled ctx returns nil:
// worker.Run then shuts down at once.
func ensureDemoSchema(ctx context.Context, cfg worker.Config) error {
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return usagef("invalid database URL: %v", err)
	}
	if _, ok := pcfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		pcfg.ConnConfig.RuntimeParams["application_name"] = "projectionist-worker"
	}
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		pcfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	pcfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("connecting to the database: %w", err)
	}
	defer pool.Close()

	waiting := false
	for delay := 500 * time.Millisecond; ; delay = min(2*delay, 15*time.Second) {
		err := demo.EnsureSchema(ctx, pool)
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			if waiting {
				cfg.Logger.Info("created the demo read models")
			}
			return nil
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &pgErr):
			return err
		case !waiting:
			cfg.Logger.Warn("cannot create the demo read models yet; retrying", "error", err)
			waiting = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
}
