package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/projectionist/projectionist/internal/dbconn"
	"github.com/projectionist/projectionist/pkg/demo"
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
  # One worker for everything (one partition):
  DATABASE_URL='postgres://app@localhost:5432/app?sslmode=disable' TOTAL_PARTITIONS=1 projectionist worker

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
	// Whatever the flags and variables hold, the password is removed.
	c.redact = dbconn.NewRedactor(append([]string{c.getenv("DATABASE_URL"), "password=" + c.getenv("PGPASSWORD")}, args...)...)
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
	cfg.Setup, cfg.Version = demo.EnsureSchema, version
	err = worker.Run(c.ctx, cfg, demo.Projections()...)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, worker.ErrInvalidConfig), errors.Is(err, projection.ErrInvalidConfig):
		return c.fail("worker", &usageError{err.Error()})
	}
	return c.fail("worker", err)
}
