package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

const deadLettersAbout = `Dead letters are the events a projection running with errorPolicy
DeadLetter failed to handle: the projection went on past them, and each
waits with its error until it is retried or discarded. The plugin sees and
acts on them through the Projection (status.deadLetterSamples and
spec.deadLetterAction), so it needs no database access.`

var deadLettersListCommand = command{
	name:    "dead-letters list",
	args:    "NAME",
	summary: "list a Projection's oldest dead letters, as its status shows them",
	description: `Lists the oldest dead letters (at most 10) the operator reports in
status.deadLetterSamples: position, partition, event id and type,
aggregate, when the handler last failed, whether a retry is pending, and
the first line of the error; and how many there are in all.
'projectionist dead-letters list' and 'show', with database access, list
every one and show whole errors.

` + deadLettersAbout,
	examples: `  kubectl projectionist dead-letters list revenue -n shop`,
	flags: func(c *cli, fs *pflag.FlagSet) func(context.Context, *kube, []string) error {
		return func(ctx context.Context, k *kube, args []string) error {
			p, err := k.get(ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Fprint(c.stdout, formatDeadLetters(p, c.now()))
			return nil
		}
	},
}

var deadLettersRetryCommand = command{
	name:    "dead-letters retry",
	args:    "NAME",
	summary: "hand dead letters back to their partitions' workers (spec.deadLetterAction)",
	description: `Sets spec.deadLetterAction to a Retry of the dead letters named with --id
(repeat it, at most 100), or of all of them with --all. The operator
requests the retries in the database; each event is then applied by the
worker that owns its aggregate, in a transaction of its own through the
projection's handler, and its dead letter is deleted in that transaction:
an event is applied once however many retries are requested and whatever
crashes. If the handler fails again the event stays dead-lettered with the
new error.

With --wait the command waits until the operator reports the action done
(status.deadLetterAction) and prints its outcome; the retries themselves
follow within about a second when the workers run.

` + deadLettersAbout,
	examples: `  kubectl projectionist dead-letters retry revenue --id 0b6f1c2e-5d1a-4f0e-9a57-3c2d1e0f9a8b
  kubectl projectionist dead-letters retry revenue -n shop --all --wait`,
	flags: func(c *cli, fs *pflag.FlagSet) func(context.Context, *kube, []string) error {
		return deadLetterActionFlags(c, fs, v1alpha1.DeadLetterRetry)
	},
}

var deadLettersDiscardCommand = command{
	name:    "dead-letters discard",
	args:    "NAME",
	summary: "delete dead letters without applying them (spec.deadLetterAction)",
	description: `Sets spec.deadLetterAction to a Discard of the dead letters named with
--id (repeat it, at most 100), or of all of them with --all. The operator
deletes them in the database without applying the events.

With --wait the command waits until the operator reports the action done
(status.deadLetterAction) and prints its outcome.

` + deadLettersAbout,
	examples: `  kubectl projectionist dead-letters discard revenue --id 0b6f1c2e-5d1a-4f0e-9a57-3c2d1e0f9a8b --wait
  kubectl projectionist dead-letters discard revenue -n shop --all`,
	flags: func(c *cli, fs *pflag.FlagSet) func(context.Context, *kube, []string) error {
		return deadLetterActionFlags(c, fs, v1alpha1.DeadLetterDiscard)
	},
}

func deadLetterActionFlags(c *cli, fs *pflag.FlagSet, action v1alpha1.DeadLetterActionType) func(context.Context, *kube, []string) error {
	ids := fs.StringSlice("id", nil, "a dead-lettered event's id (repeatable)")
	all := fs.Bool("all", false, "every dead letter of the projection")
	waitFlag := fs.Bool("wait", false, "wait until the operator reports the action done")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long --wait waits")
	return func(ctx context.Context, k *kube, args []string) error {
		switch {
		case *all && len(*ids) > 0:
			return usagef("--id and --all exclude each other")
		case !*all && len(*ids) == 0:
			return usagef("name the dead letters with --id EVENT_ID, or pass --all for every one")
		case len(*ids) > v1alpha1.MaxDeadLetterActionEvents:
			return usagef("%d --id flags: at most %d at once", len(*ids), v1alpha1.MaxDeadLetterActionEvents)
		case *timeout <= 0:
			return usagef("--timeout must be positive, not %s", *timeout)
		}
		for _, id := range *ids {
			if _, err := uuid.Parse(id); err != nil {
				return usagef("--id %q is not an event id (a UUID, as 'dead-letters list' shows)", id)
			}
		}
		a := v1alpha1.DeadLetterAction{Token: "kubectl-" + c.now().UTC().Format("20060102T150405.000000000Z"), Action: action, EventIDs: *ids}
		return c.deadLetterAction(ctx, k, args[0], a, *waitFlag, *timeout)
	}
}

// deadLetterAction patches spec.deadLetterAction and, with wait, waits for
// its outcome in status.
func (c *cli) deadLetterAction(ctx context.Context, k *kube, name string, a v1alpha1.DeadLetterAction, wait bool, timeout time.Duration) error {
	// eventIDs null, not left out, for --all: a merge patch keeps the
	// fields it does not name, such as an earlier action's ids.
	var ids any
	if len(a.EventIDs) > 0 {
		ids = a.EventIDs
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"deadLetterAction": map[string]any{
		"token": a.Token, "action": a.Action, "eventIDs": ids}}})
	if err != nil {
		return err
	}
	p := &v1alpha1.Projection{}
	p.Namespace, p.Name = k.namespace, name
	if err := k.client.Patch(ctx, p, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return k.explain(err, name, k.namespace)
	}
	what := "all its dead letters"
	if len(a.EventIDs) > 0 {
		what = fmt.Sprintf("%d dead letters", len(a.EventIDs))
	}
	fmt.Fprintf(c.stdout, "projection %q in namespace %q: %s of %s requested (token %q)\n", name, k.namespace, a.Action, what, a.Token)
	if !wait {
		return nil
	}
	var done *v1alpha1.DeadLetterActionStatus
	err = waitFor(ctx, timeout, func(context.Context) (bool, error) {
		cur, err := k.get(ctx, name)
		if err != nil {
			return false, err
		}
		if st := cur.Status.DeadLetterAction; st != nil && st.Token == a.Token {
			done = st
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		if wait := (waitTimeout{}); errors.As(err, &wait) {
			return fmt.Errorf("timed out after %s waiting for the operator to run the %s on projection %q (is it Degraded? 'kubectl projectionist status %s')",
				timeout, a.Action, name, name)
		}
		return err
	}
	fmt.Fprintf(c.stdout, "done: %s\n", done.Message)
	return nil
}
