package main

import (
	"fmt"

	"github.com/projectionist/projectionist/pkg/projection"
)

func (c *cli) forget(args []string) int {
	const name = "forget"
	f := newFlags(commandHelp{
		name: name, args: "--projection NAME --yes [flags]",
		description: `Deletes every row projectionist keeps for a projection that is gone for
good: its checkpoints, topology, frontier, dead letters and reset requests,
in one transaction, and says how many of each it deleted. Deleting a
Projection resource leaves these rows, so that one recreated under the same
name resumes where it was; forget them once it will not come back (after a
blue/green cut-over, say).

Stop the projection's workers first (delete the Projection): a worker still
running would start over from the beginning of the log. The read model's
tables are the projection's own: drop them yourself. --yes is required, as
this cannot be undone.`,
		examples: `  kubectl delete projection user-count
  projectionist forget --projection user-count --yes`,
	})
	dsnFlag := databaseURLFlag(f)
	proj := f.String("projection", "", "the projection's name, its projectionName (required)")
	yes := f.Bool("yes", false, "confirm: the rows cannot be restored")
	if done, code := c.parse(f, args); done {
		return code
	}
	switch {
	case *proj == "":
		return c.fail(name, usagef("--projection is required"))
	case !*yes:
		return c.fail(name, usagef("forgetting projection %q deletes its checkpoints and dead letters for good: pass --yes to confirm", *proj))
	}
	return c.withDatabase(name, *dsnFlag, func(db projection.DBTX) error {
		rows, err := projection.ForgetProjection(c.ctx, db, *proj)
		if err != nil {
			return err
		}
		if rows.Total() == 0 {
			fmt.Fprintf(c.stdout, "projection %q has no rows: nothing to forget\n", *proj)
			return nil
		}
		fmt.Fprintf(c.stdout, "forgot projection %q: deleted %d checkpoints, %d frontier rows, %d dead letters, %d topology rows, %d reset requests\n",
			*proj, rows.Checkpoints, rows.Frontier, rows.DeadLetters, rows.Topology, rows.Resets)
		return nil
	})
}
