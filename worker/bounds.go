package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/projectionist/projectionist/internal/dbconn"
	"github.com/projectionist/projectionist/pkg/projection"
)

// setUp migrates the schema, runs Setup and applies the projections'
// pending resets within BatchTimeout, so that a database that stops
// answering halfway is retried, not waited for.
func (w *worker) setUp(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, w.cfg.BatchTimeout)
	defer cancel()
	bounded := func(what string, err error) error {
		if ctx.Err() == nil && sctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, &dbconn.TimeoutError{Op: what, Timeout: w.cfg.BatchTimeout, Err: err})
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, err := projection.Migrate(sctx, w.pool); err != nil {
		return bounded("migrating the schema", err)
	}
	if w.cfg.Setup != nil {
		if err := w.cfg.Setup(sctx, w.pool); err != nil {
			return bounded("setting up", err)
		}
	}
	// A pending reset (a rebuild) before any batch: after Setup, which
	// may create the tables the Reset hook clears.
	for _, p := range w.procs {
		r, err := projection.ApplyPendingReset(sctx, w.pool, p.projection)
		if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "42501" {
			// A role granted before the upgrade that brought rebuilds
			// (docs/least-privilege.sql not run again): rebuilds cannot
			// proceed, but processing can. Not a crash loop for that.
			w.log.Warn("cannot read or carry out reset requests: permission denied; processing goes on, but a rebuild of "+
				"this projection waits until the worker's role is granted them (run docs/least-privilege.sql again)",
				"projection", p.name, errAttr(err))
			continue
		}
		if err != nil {
			return bounded("applying a pending reset", err)
		}
		switch r.Outcome {
		case projection.ResetApplied:
			w.log.Info("projection reset: read model and checkpoints cleared, replaying from the beginning of the log",
				"projection", p.name, "token", r.Token)
		case projection.ResetRefused:
			w.log.Warn("projection reset refused; running on from the checkpoints", "projection", p.name, "token", r.Token,
				errAttr(r.Refusal))
		}
	}
	return nil
}

// Failure states, as logged ("state") and shown by /readyz.
const (
	stateNotResponding = "database not responding"
	stateUnreachable   = "database unreachable"
	stateFailing       = "failing"
)

// failureState classifies why the projections are not running.
func failureState(err error) string {
	switch {
	case errors.Is(err, projection.ErrTimeout), dbconn.NotResponding(err):
		return stateNotResponding
	case dbconn.Unreachable(err):
		return stateUnreachable
	}
	return stateFailing
}
