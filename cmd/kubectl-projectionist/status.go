package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"
)

var statusCommand = command{
	name:    "status",
	args:    "NAME",
	summary: "show a Projection's conditions, lag per partition and an ETA to catch up",
	description: `Shows the Projection's conditions (type, status, reason, age, message),
spec.replicas against the pods, ready pods and partitions of its status,
whether it is suspended, the head position, the total lag in events and
in seconds, and each partition's position and lag.

The status holds positions and lag but no rate, so one reading gives no
ETA. With --watch the command reads the status again every --interval
and estimates the time to catch up from the lag's fall since the first
reading (net of events appended meanwhile); the operator refreshes the
status every 10s by default, so give it a few intervals. It prints
"unknown" while the lag is not falling. Stop it with Ctrl-C.`,
	examples: `  kubectl projectionist status user-count
  kubectl projectionist status user-count -n shop --context prod
  kubectl projectionist status user-count --watch --interval 10s`,
	flags: func(c *cli, fs *pflag.FlagSet) func(context.Context, *kube, []string) error {
		watch := fs.BoolP("watch", "w", false, "read the status again every --interval, with an ETA from the lag's fall, until interrupted")
		interval := fs.Duration("interval", 5*time.Second, "time between readings with --watch")
		return func(ctx context.Context, k *kube, args []string) error {
			name := args[0]
			if *interval <= 0 {
				return usagef("--interval must be positive, not %s", *interval)
			}
			return c.status(ctx, k, name, *watch, *interval)
		}
	},
}

// status prints the Projection's status once or, with watch, every
// interval until ctx ends.
func (c *cli) status(ctx context.Context, k *kube, name string, watch bool, interval time.Duration) error {
	var first *reading
	for {
		p, err := k.get(ctx, name)
		if err != nil {
			if watch && ctx.Err() != nil {
				return nil // interrupted
			}
			return err
		}
		now := c.now()
		last := &reading{at: now, lag: p.Status.Lag}
		if first == nil {
			first = last
		}
		if !watch {
			fmt.Fprint(c.stdout, formatStatus(p, now, estimateETA(nil, last)))
			return nil
		}
		fmt.Fprintf(c.stdout, "--- %s\n%s", now.Format(time.TimeOnly), formatStatus(p, now, estimateETA(first, last)))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}
