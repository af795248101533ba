package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/projectionist/projectionist/pkg/projection"
)

const deadLettersDescription = `
Dead letters are the events a projection running with the DeadLetter error
policy failed to handle: the projection went on past them, and each waits
with its error until it is retried or discarded.`

const deadLettersRetryNote = `
A retry is applied by the worker that owns the event's aggregate under the
current partition count, within about a second of the request, in a
transaction of its own through the projection's handler; the dead letter is
deleted in that transaction, so the event is applied once however many
retries are requested and whatever crashes. No worker running: the request
waits for one. If the handler fails again the event stays dead-lettered
with the new error (the worker does not stop, whatever its policy). The
event is applied after the later events of its aggregate that were handled
meanwhile.`

func (c *cli) deadLettersList(args []string) int {
	const name = "dead-letters list"
	f := newFlags(commandHelp{
		name: name, args: "--projection NAME [flags]",
		description: `Lists a projection's dead letters, oldest first: position, event id and
type, aggregate, when it failed, whether a retry is pending, and the error.` + "\n" + deadLettersDescription,
		examples: `  projectionist dead-letters list --projection revenue
  projectionist dead-letters list --projection revenue --partition 2 --limit 20`,
	})
	dsnFlag := databaseURLFlag(f)
	proj := f.String("projection", "", "the projection's name (required)")
	partition := f.Int("partition", -1, "only the dead letters this partition set aside; -1 for all")
	limit := f.Int("limit", 100, "the most dead letters to list, at least 1")
	if done, code := c.parse(f, args); done {
		return code
	}
	switch {
	case *proj == "":
		return c.fail(name, usagef("--projection is required"))
	case *limit < 1:
		return c.fail(name, usagef("--limit is %d: must be at least 1", *limit))
	case *partition < -1:
		return c.fail(name, usagef("--partition is %d: must be a partition key (0 or more) or -1 for all", *partition))
	}
	filter := projection.DeadLetterFilter{Limit: *limit}
	if *partition >= 0 {
		filter.PartitionKey = partition
	}
	return c.withDatabase(name, *dsnFlag, func(db projection.DBTX) error {
		dls, err := projection.ListDeadLetters(c.ctx, db, *proj, filter)
		if err != nil {
			return err
		}
		if len(dls) == 0 {
			fmt.Fprintf(c.stdout, "projection %q has no dead letters\n", *proj)
			return nil
		}
		printDeadLetters(c.stdout, dls)
		if len(dls) == *limit {
			fmt.Fprintf(c.stdout, "(the first %d; --limit lists more)\n", *limit)
		}
		return nil
	})
}

func (c *cli) deadLettersShow(args []string) int {
	const name = "dead-letters show"
	f := newFlags(commandHelp{
		name: name, args: "--projection NAME --id EVENT_ID [flags]",
		description: "Shows one dead letter in full, with its whole error.\n" + deadLettersDescription,
		examples:    `  projectionist dead-letters show --projection revenue --id 0b6f1c2e-5d1a-4f0e-9a57-3c2d1e0f9a8b`,
	})
	dsnFlag := databaseURLFlag(f)
	proj := f.String("projection", "", "the projection's name (required)")
	idFlag := f.String("id", "", "the dead-lettered event's id (required)")
	if done, code := c.parse(f, args); done {
		return code
	}
	if *proj == "" {
		return c.fail(name, usagef("--projection is required"))
	}
	id, err := parseEventID(*idFlag, false)
	if err != nil {
		return c.fail(name, err)
	}
	return c.withDatabase(name, *dsnFlag, func(db projection.DBTX) error {
		d, err := projection.GetDeadLetter(c.ctx, db, *proj, id)
		if err != nil {
			return err
		}
		printDeadLetter(c.stdout, d)
		return nil
	})
}

func (c *cli) deadLettersRetry(args []string) int {
	return c.deadLettersAct(args, "retry", "Requests a retry of one dead letter (--id) or of all a projection's (--all).\n"+deadLettersRetryNote,
		func(db projection.DBTX, proj string, id uuid.UUID) error {
			return projection.RetryDeadLetter(c.ctx, db, proj, id)
		},
		func(db projection.DBTX, proj string) (int64, error) {
			return projection.RetryAllDeadLetters(c.ctx, db, proj)
		},
		"retry requested for %d dead letters of projection %q\n", "retry requested for event %s of projection %q\n")
}

func (c *cli) deadLettersDiscard(args []string) int {
	return c.deadLettersAct(args, "discard", `Deletes one dead letter (--id) or all a projection's (--all) without
applying the events. A retry in progress at that moment finishes first.`,
		func(db projection.DBTX, proj string, id uuid.UUID) error {
			return projection.DiscardDeadLetter(c.ctx, db, proj, id)
		},
		func(db projection.DBTX, proj string) (int64, error) {
			return projection.DiscardAllDeadLetters(c.ctx, db, proj)
		},
		"discarded %d dead letters of projection %q\n", "discarded event %s of projection %q\n")
}

// deadLettersAct is retry and discard: one dead letter by --id, or --all.
func (c *cli) deadLettersAct(args []string, verb, description string,
	one func(projection.DBTX, string, uuid.UUID) error, all func(projection.DBTX, string) (int64, error),
	allDone, oneDone string,
) int {
	name := "dead-letters " + verb
	f := newFlags(commandHelp{
		name: name, args: "--projection NAME (--id EVENT_ID | --all) [flags]",
		description: description,
		examples: fmt.Sprintf(`  projectionist %s --projection revenue --id 0b6f1c2e-5d1a-4f0e-9a57-3c2d1e0f9a8b
  projectionist %s --projection revenue --all`, name, name),
	})
	dsnFlag := databaseURLFlag(f)
	proj := f.String("projection", "", "the projection's name (required)")
	idFlag := f.String("id", "", "the dead-lettered event's id")
	allFlag := f.Bool("all", false, "every dead letter of the projection")
	if done, code := c.parse(f, args); done {
		return code
	}
	if *proj == "" {
		return c.fail(name, usagef("--projection is required"))
	}
	if *allFlag && *idFlag != "" {
		return c.fail(name, usagef("--id and --all exclude each other: %s one dead letter or all of them", verb))
	}
	var id uuid.UUID
	if !*allFlag {
		var err error
		if id, err = parseEventID(*idFlag, true); err != nil {
			return c.fail(name, err)
		}
	}
	return c.withDatabase(name, *dsnFlag, func(db projection.DBTX) error {
		if *allFlag {
			n, err := all(db, *proj)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, allDone, n, *proj)
			return nil
		}
		if err := one(db, *proj, id); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, oneDone, id, *proj)
		return nil
	})
}

// parseEventID parses --id; orAll says whether --all is the alternative.
func parseEventID(v string, orAll bool) (uuid.UUID, error) {
	if v == "" {
		if orAll {
			return uuid.UUID{}, usagef("name the dead letter with --id EVENT_ID, or pass --all for every one")
		}
		return uuid.UUID{}, usagef("--id is required")
	}
	id, err := uuid.Parse(v)
	if err != nil {
		return uuid.UUID{}, usagef("--id %q is not an event id (a UUID, as 'dead-letters list' shows)", v)
	}
	return id, nil
}

// withDatabase connects as the dead-letters commands do and runs fn,
// reporting its error with the schema hint.
func (c *cli) withDatabase(name, dsnFlag string, fn func(projection.DBTX) error) int {
	dsn, err := c.databaseURL(dsnFlag)
	if err != nil {
		return c.fail(name, err)
	}
	pool, err := c.connect(dsn, "projectionist-dead-letters", 1)
	if err != nil {
		return c.fail(name, err)
	}
	defer pool.Close()
	if err := fn(pool); err != nil {
		if errors.Is(err, projection.ErrDeadLetterNotFound) {
			err = fmt.Errorf("%w (retried successfully or discarded already? 'dead-letters list' shows the ones left)", err)
		}
		return c.fail(name, withSchemaHint(err))
	}
	return exitOK
}

// printDeadLetters prints a table, e.g.
//
//	POSITION  EVENT ID  TYPE  AGGREGATE  PARTITION  FAILED AT  RETRY  ERROR
func printDeadLetters(w io.Writer, dls []projection.DeadLetter) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POSITION\tEVENT ID\tTYPE\tAGGREGATE\tPARTITION\tFAILED AT\tRETRY\tERROR")
	for _, d := range dls {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s/%s\t%d\t%s\t%s\t%s\n", d.Position.GlobalPosition, d.EventID, d.EventType,
			d.AggregateType, d.AggregateID, d.PartitionKey, d.FailedAt.UTC().Format(time.RFC3339), retryState(d), firstLine(d.Error, 60))
	}
	tw.Flush()
}

func printDeadLetter(w io.Writer, d projection.DeadLetter) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Projection:\t%s\n", d.Projection)
	fmt.Fprintf(tw, "Event ID:\t%s\n", d.EventID)
	fmt.Fprintf(tw, "Event type:\t%s\n", d.EventType)
	fmt.Fprintf(tw, "Aggregate:\t%s %s\n", d.AggregateType, d.AggregateID)
	fmt.Fprintf(tw, "Position:\t%d (transaction %d)\n", d.Position.GlobalPosition, d.Position.TransactionID)
	fmt.Fprintf(tw, "Set aside by:\tpartition %d\n", d.PartitionKey)
	fmt.Fprintf(tw, "Failed at:\t%s\n", d.FailedAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "Failed retries:\t%d\n", d.Retries)
	fmt.Fprintf(tw, "Retry:\t%s\n", retryState(d))
	tw.Flush()
	fmt.Fprintf(w, "Error:\n  %s\n", strings.ReplaceAll(d.Error, "\n", "\n  "))
}

func retryState(d projection.DeadLetter) string {
	if d.RetryRequestedAt.IsZero() {
		return "-"
	}
	return "pending since " + d.RetryRequestedAt.UTC().Format(time.RFC3339)
}

// firstLine returns s's first line, cut to n runes.
func firstLine(s string, n int) string {
	for i, r := range s {
		if r == '\n' {
			s = s[:i]
			break
		}
	}
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
