package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// maxRebuildToken is spec.rebuildToken's bound (its CRD marker).
const maxRebuildToken = 63

var rebuildCommand = command{
	name:    "rebuild",
	args:    "NAME",
	summary: "rebuild a Projection's read model from the beginning of the log (spec.rebuildToken)",
	description: `Sets spec.rebuildToken to a new token with a merge patch. The operator
stops every worker pod and waits until none runs, asks for a reset in the
database, and starts the pods again; the first worker to start runs the
projection's Reset hook, which clears the read model in the transaction
that deletes the checkpoints, and the workers replay every event exactly
once, on the same partition count. Events appended meanwhile are not
lost: they are replayed with the rest.

A projection without a Reset hook is not touched: the rebuild ends
Failed, reason ResetNotSupported, and the command says so.

The token defaults to "kubectl-" and the time, UTC; give --token to name
the rebuild yourself. A token equal to the last rebuild's does nothing.

With --wait the command prints each phase (Stopping, Resetting,
Replaying with position and rate) and returns once the rebuild is
Rebuilt, exit 0, or Failed, exit 1, or --timeout passes, exit 1.`,
	examples: `  kubectl projectionist rebuild revenue
  kubectl projectionist rebuild revenue -n shop --token fix-vat-2026-12 --wait --timeout 30m`,
	flags: func(c *cli, fs *pflag.FlagSet) func(context.Context, *kube, []string) error {
		token := fs.String("token", "", `the rebuild's token; defaults to "kubectl-" and the time (UTC)`)
		waitFlag := fs.Bool("wait", false, "wait until the rebuild is Rebuilt or Failed, printing its phases")
		timeout := fs.Duration("timeout", 30*time.Minute, "how long --wait waits")
		return func(ctx context.Context, k *kube, args []string) error {
			if *timeout <= 0 {
				return usagef("--timeout must be positive, not %s", *timeout)
			}
			t := *token
			if t == "" {
				t = "kubectl-" + c.now().UTC().Format("20060102T150405Z")
			}
			if len(t) > maxRebuildToken {
				return usagef("--token is %d characters: at most %d", len(t), maxRebuildToken)
			}
			for _, r := range t {
				if r < ' ' || r > '~' {
					return usagef("--token %q: only printable ASCII characters", t)
				}
			}
			return c.rebuild(ctx, k, args[0], t, *waitFlag, *timeout)
		}
	},
}

// rebuild patches spec.rebuildToken and, with wait, follows status.rebuild
// until the rebuild under token ends.
func (c *cli) rebuild(ctx context.Context, k *kube, name, token string, wait bool, timeout time.Duration) error {
	before, err := k.get(ctx, name)
	if err != nil {
		return err
	}
	if b := before.Status.Rebuild; before.Spec.RebuildToken == token && b != nil && b.Token == token && rebuildEnded(b) {
		return fmt.Errorf("projection %q in namespace %q was already rebuilt under token %q (%s): give another --token to rebuild again",
			name, k.namespace, token, b.Phase)
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"rebuildToken": token}})
	if err != nil {
		return err
	}
	p := before.DeepCopy()
	if err := k.client.Patch(ctx, p, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return k.explain(err, name, k.namespace)
	}
	fmt.Fprintf(c.stdout, "projection %q in namespace %q: rebuild requested (spec.rebuildToken: %q)\n", name, k.namespace, token)
	if !wait {
		return nil
	}
	var last string
	var ended *v1alpha1.RebuildStatus
	err = waitFor(ctx, timeout, func(context.Context) (bool, error) {
		cur, err := k.get(ctx, name)
		if err != nil {
			return false, err
		}
		line := describeRebuild(cur.Status.Rebuild, token)
		if line != last {
			fmt.Fprintf(c.stdout, "%s  %s\n", c.now().Format(time.TimeOnly), line)
			last = line
		}
		if b := cur.Status.Rebuild; b != nil && b.Token == token && rebuildEnded(b) {
			ended = b
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		if wait := (waitTimeout{}); errors.As(err, &wait) {
			return fmt.Errorf("timed out after %s waiting for projection %q to be rebuilt: %s", timeout, name, last)
		}
		return err
	}
	if ended.Phase == v1alpha1.RebuildFailed {
		return fmt.Errorf("rebuild %q of projection %q failed: %s", token, name, ended.Message)
	}
	return nil
}

func rebuildEnded(b *v1alpha1.RebuildStatus) bool {
	return b.Phase == v1alpha1.RebuildRebuilt || b.Phase == v1alpha1.RebuildFailed
}

// describeRebuild is one line on the rebuild under token, as far as the
// status shows it.
func describeRebuild(b *v1alpha1.RebuildStatus, token string) string {
	if b == nil || b.Token != token {
		return "waiting for the operator to start the rebuild"
	}
	s := string(b.Phase)
	if b.Message != "" {
		s += ": " + b.Message
	}
	return s
}
