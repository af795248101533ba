package main

import (
	"context"
	"fmt"
	"time"

	"github.com/projectionist/projectionist/internal/dbconn"
	"github.com/projectionist/projectionist/pkg/projection"
)

// migrateTimeout bounds a migration, waiting for another process's
// included.
const migrateTimeout = 5 * time.Minute

func (c *cli) migrate(args []string) int {
	f := newFlags(commandHelp{
		name: "migrate", args: "[flags]",
		description: `
Brings the event store's schema (events, checkpoints, topology, dead
letters) up to date and prints the migrations it applied. It runs in one
transaction under an advisory lock: safe to run from several processes at
once, and again on an up-to-date schema, which it leaves as it is.
Connecting is bounded by connect_timeout (default 10s), the migration by
5 minutes.`,
		examples: `  DATABASE_URL='postgres://postgres:secret@localhost:5432/app?sslmode=disable' projectionist migrate
  projectionist migrate --database-url 'host=localhost user=postgres dbname=app'`,
	})
	dsnFlag := databaseURLFlag(f)
	if done, code := c.parse(f, args); done {
		return code
	}
	dsn, err := c.databaseURL(*dsnFlag)
	if err != nil {
		return c.fail("migrate", err)
	}
	pool, err := c.connect(dsn, "projectionist-migrate", 1)
	if err != nil {
		return c.fail("migrate", err)
	}
	defer pool.Close()

	// Bounded, so that a server that stops answering fails the command
	// instead of hanging it; generous, since a migration may wait for
	// another process's.
	mctx, cancel := context.WithTimeout(c.ctx, migrateTimeout)
	defer cancel()
	applied, err := projection.Migrate(mctx, pool)
	if err != nil && c.ctx.Err() == nil && mctx.Err() != nil {
		err = &dbconn.TimeoutError{Op: "migrating", Timeout: migrateTimeout, Err: err}
	}
	if err != nil {
		return c.fail("migrate", fmt.Errorf("migrating: %w", err))
	}
	all, err := projection.Migrations()
	if err != nil {
		return c.fail("migrate", err)
	}
	for _, m := range applied {
		fmt.Fprintf(c.stdout, "applied %s\n", m.Name)
	}
	latest := all[len(all)-1]
	if len(applied) == 0 {
		fmt.Fprintf(c.stdout, "nothing to apply: the schema is at version %d (%s)\n", latest.Version, latest.Name)
	} else {
		fmt.Fprintf(c.stdout, "the schema is at version %d (%s)\n", latest.Version, latest.Name)
	}
	return exitOK
}
