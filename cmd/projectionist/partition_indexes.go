package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/projectionist/projectionist/pkg/projection"
)

const partitionIndexesAbout = `A partition index for N partitions, events_partitions_N_idx on
(partition_hash % N, transaction_id, global_position), lets each of a
projection's N partitions read only its own rows, where without it every
partition's reads examine the rows of all N. Partitions find it by
themselves within 30 seconds of it becoming valid, and read the same events
either way. The operator builds one for every count of at least its
--partition-index-min-partitions (16) and drops those no projection has
used for --partition-index-retention (1h); these commands are for
projections run without the operator, or to look.`

func (c *cli) partitionIndexesList(args []string) int {
	f := newFlags(partitionIndexesHelp("list", "[flags]",
		"Lists the partition indexes on the events table: the partition count each\n"+
			"serves, whether it is valid or being built, its size, and the projections\n"+
			"that have that count now.", ""))
	dsnFlag := databaseURLFlag(f)
	if done, code := c.parse(f, args); done {
		return code
	}
	return c.withDatabase(f.help.name, *dsnFlag, func(db projection.DBTX) error {
		ixs, err := projection.PartitionIndexes(c.ctx, db)
		if err != nil {
			return err
		}
		if len(ixs) == 0 {
			fmt.Fprintln(c.stdout, "no partition indexes")
			return nil
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PARTITIONS\tINDEX\tSTATE\tSIZE\tUSED BY")
		for _, ix := range ixs {
			state := "valid"
			switch {
			case ix.Building:
				state = "building"
			case !ix.Valid:
				state = "invalid (a failed build: create rebuilds it)"
			}
			used := strings.Join(ix.UsedBy, ",")
			if used == "" {
				used = "-"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", ix.Partitions, ix.Name, state, bytesOf(ix.SizeBytes), used)
		}
		return tw.Flush()
	})
}

func (c *cli) partitionIndexesCreate(args []string) int {
	f, dsnFlag, n := onePartitionIndexFlags("create",
		"Builds the partition index for N partitions with CREATE INDEX CONCURRENTLY,\n"+
			"printing its progress; appends and projections go on meanwhile. It takes\n"+
			"about two scans of the events table, and the role must own the table.\n"+
			"An index a failed build left invalid is dropped and built again.")
	progress := f.Duration("progress-interval", 5*time.Second, "how often to print the build's progress")
	if done, code := c.parseOnePartitionIndex(f, n, args); done {
		return code
	}
	name := f.help.name
	if *progress <= 0 {
		return c.fail(name, usagef("--progress-interval %s: must be positive", *progress))
	}
	dsn, err := c.databaseURL(*dsnFlag)
	if err != nil {
		return c.fail(name, err)
	}
	// One connection builds, the other reads its progress.
	pool, err := c.connect(dsn, "projectionist-partition-indexes", 2)
	if err != nil {
		return c.fail(name, err)
	}
	defer pool.Close()
	ctx, stop := context.WithCancel(c.ctx)
	defer stop()
	go func() {
		t := time.NewTicker(*progress)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			var phase string
			var done, total int64
			err := pool.QueryRow(ctx, `SELECT phase, blocks_done, blocks_total FROM pg_stat_progress_create_index
				WHERE index_relid = to_regclass($1)`, projection.PartitionIndexName(*n)).Scan(&phase, &done, &total)
			if err == nil {
				pct := ""
				if total > 0 {
					pct = fmt.Sprintf(": %d%% of %d blocks", 100*done/total, total)
				}
				fmt.Fprintf(c.stdout, "building %s: %s%s\n", projection.PartitionIndexName(*n), phase, pct)
			}
		}
	}()
	began := time.Now()
	built, err := projection.CreatePartitionIndex(c.ctx, pool, *n)
	stop()
	if errors.Is(err, projection.ErrPartitionIndexBuilding) {
		return c.fail(name, fmt.Errorf("%w: 'projectionist partition-indexes list' shows it valid once done", err))
	}
	if err != nil {
		return c.fail(name, withSchemaHint(err))
	}
	if !built {
		fmt.Fprintf(c.stdout, "partition index %s for %d partitions is there already, valid\n", projection.PartitionIndexName(*n), *n)
		return exitOK
	}
	fmt.Fprintf(c.stdout, "built partition index %s for %d partitions in %s\n", projection.PartitionIndexName(*n), *n, time.Since(began).Round(time.Millisecond))
	return exitOK
}

func (c *cli) partitionIndexesDrop(args []string) int {
	f, dsnFlag, n := onePartitionIndexFlags("drop",
		"Drops the partition index for N partitions with DROP INDEX CONCURRENTLY,\n"+
			"once the reads in flight through it are done. Partitions of N go back to\n"+
			"reading through the partition filter, with the same events.")
	if done, code := c.parseOnePartitionIndex(f, n, args); done {
		return code
	}
	return c.withDatabase(f.help.name, *dsnFlag, func(db projection.DBTX) error {
		if err := projection.DropPartitionIndex(c.ctx, db, *n); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "dropped partition index %s, if there was one\n", projection.PartitionIndexName(*n))
		return nil
	})
}

// partitionIndexesHelp is the help of partition-indexes verb: its
// description, then what partition indexes are; exampleArgs follow the
// verb in its example.
func partitionIndexesHelp(verb, args, description, exampleArgs string) commandHelp {
	return commandHelp{
		name: "partition-indexes " + verb, args: args,
		description: description + "\n\n" + partitionIndexesAbout,
		examples:    "  projectionist partition-indexes " + verb + exampleArgs,
	}
}

// onePartitionIndexFlags declares the flags of partition-indexes verb, a
// command on the index for one partition count: --database-url and
// --partitions N.
func onePartitionIndexFlags(verb, description string) (f *flags, dsnFlag *string, n *int) {
	f = newFlags(partitionIndexesHelp(verb, "--partitions N [flags]", description, " --partitions 64"))
	return f, databaseURLFlag(f), f.Int("partitions", 0, "the partition count N the index serves (required)")
}

// parseOnePartitionIndex parses the args of a command from
// onePartitionIndexFlags and checks that a partition index serves the
// count n.
func (c *cli) parseOnePartitionIndex(f *flags, n *int, args []string) (done bool, code int) {
	if done, code := c.parse(f, args); done {
		return true, code
	}
	if *n < projection.MinPartitionIndexPartitions {
		return true, c.fail(f.help.name, usagef("--partitions %d: a partition index serves %d or more partitions", *n, projection.MinPartitionIndexPartitions))
	}
	return false, exitOK
}

// bytesOf is n bytes in a unit a reader takes in at a glance.
func bytesOf(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
