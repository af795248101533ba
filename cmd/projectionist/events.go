package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/projectionist/projectionist/internal/loadgen"
	"github.com/projectionist/projectionist/pkg/demo"
)

// generateFlagNames maps loadgen's option names to this command's flags.
var generateFlagNames = map[string]string{
	"Count":         "--count",
	"Aggregates":    "--aggregates",
	"Rate":          "--rate",
	"Concurrency":   "--concurrency",
	"ProgressEvery": "--progress",
}

func (c *cli) eventsGenerate(args []string) int {
	const name = "events generate"
	f := newFlags(commandHelp{
		name: name, args: "[flags]",
		description: `
Appends demo events to the log, for the built-in projections (user_count,
revenue, activity_log) to project: users are created (UserCreated), verify
their email (EmailVerified), place orders (OrderPlaced, each a new Order
aggregate with an amount_cents), and a few are deactivated
(UserDeactivated). A user's stream always starts with UserCreated, and
nothing follows UserDeactivated. The users are user-000000, user-000001, ...
up to --aggregates, the same on every run: a later run carries on with them.

A run whose users all exist appends no UserCreated; once they have also
verified their email and a tenth are deactivated, it appends only orders:
the summary says so when every user existed before the run. A larger
--aggregates adds users.

Appends use optimistic concurrency; one that loses a race with another
appender reloads the user's stream and is retried. Progress goes to
standard error, the summary to standard output.`,
		examples: `  projectionist events generate --count 500
  projectionist events generate --count 100000 --aggregates 5000 --concurrency 8
  projectionist events generate --count 30000 --rate 1000    # 30 s of steady load`,
	})
	dsnFlag := databaseURLFlag(f)
	count := f.Int("count", 1000, "how many events to append, at least 1")
	aggregates := f.Int("aggregates", loadgen.DefaultAggregates, "how many users to spread the events over, at least 1")
	rate := f.Float64("rate", 0, "events per second over all appenders; 0 for as fast as possible")
	concurrency := f.Int("concurrency", 4, fmt.Sprintf("appends in flight at once, between 1 and %d", loadgen.MaxConcurrency))
	progress := f.Duration("progress", time.Second, "interval between progress lines on standard error; 0 for none")
	if done, code := c.parse(f, args); done {
		return code
	}

	opts := loadgen.Options{Count: *count, Aggregates: *aggregates, Rate: *rate, Concurrency: *concurrency,
		Progress: c.stderr, ProgressEvery: *progress}
	if *progress == 0 {
		opts.Progress, opts.ProgressEvery = nil, time.Second
	}
	if err := opts.Validate(); err != nil {
		var oe *loadgen.OptionError
		if errors.As(err, &oe) {
			err = usagef("%s is %s: %s", generateFlagNames[oe.Option], oe.Value, oe.Want)
		}
		return c.fail(name, err)
	}
	dsn, err := c.databaseURL(*dsnFlag)
	if err != nil {
		return c.fail(name, err)
	}
	pool, err := c.connect(dsn, "projectionist-events-generate", int32(opts.Concurrency))
	if err != nil {
		return c.fail(name, err)
	}
	defer pool.Close()

	res, err := loadgen.Generate(c.ctx, pool, opts)
	if res.Events > 0 || err == nil {
		printSummary(c.stdout, res, opts.Aggregates)
	}
	if err != nil {
		if c.ctx.Err() != nil {
			err = fmt.Errorf("interrupted after %d of %d events", res.Events, opts.Count)
		}
		return c.fail(name, withSchemaHint(err))
	}
	return exitOK
}

// printSummary prints what was appended over users users, e.g.
//
//	appended 500 events in 1.2s (416/s), 3 conflicts retried
//	  UserCreated              50
//	  EmailVerified            12
//	  UserDeactivated           2
//	  OrderPlaced             436
//	  amount_cents       22043567
//
// and, when every user existed before the run, a line that says so: no
// UserCreated could be appended, maybe nothing but orders.
func printSummary(w io.Writer, res loadgen.Result, users int) {
	fmt.Fprintf(w, "appended %d events in %s (%.0f/s), %d conflicts retried\n",
		res.Events, res.Elapsed.Round(time.Millisecond), float64(res.Events)/res.Elapsed.Seconds(), res.Conflicts)
	for _, t := range []string{demo.EventUserCreated, demo.EventEmailVerified, demo.EventUserDeactivated, demo.EventOrderPlaced} {
		fmt.Fprintf(w, "  %-16s %10d\n", t, res.ByType[t])
	}
	fmt.Fprintf(w, "  %-16s %10d\n", "amount_cents", res.AmountCents)
	if res.Before.Existing < users {
		return
	}
	what := "none was created"
	if res.Events > 0 && res.ByType[demo.EventOrderPlaced] == res.Events {
		what += " and only orders were appended"
	}
	all := fmt.Sprintf("all %d users", users)
	if users == 1 {
		all = "the 1 user"
	}
	fmt.Fprintf(w, "%s (--aggregates) existed before this run, %d with a verified email and %d deactivated "+
		"(the generator deactivates at most %d): %s; pass --aggregates above %d to create new users\n",
		all, res.Before.Verified, res.Before.Deactivated, loadgen.MaxDeactivated(users), what, users)
}
