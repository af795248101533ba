package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// pollInterval is how often --wait reads the Projection.
const pollInterval = time.Second

var suspendCommand = command{
	name:    "suspend",
	args:    "NAME",
	summary: "stop a Projection's worker pods, keeping its partitions (spec.suspend: true)",
	description: `Sets spec.suspend to true with a merge patch. The operator stops every
worker pod and keeps spec.replicas and the partition count in the
database; events appended meanwhile wait, and resume picks them up with
no topology change. The Projection is then Ready False, reason Suspended.

With --wait the command waits, up to --timeout, until the operator
reports Ready Suspended for this generation and no worker pods are left.`,
	examples: `  kubectl projectionist suspend user-count
  kubectl projectionist suspend user-count -n shop --wait --timeout 2m`,
	flags: func(c *cli, fs *pflag.FlagSet) func(context.Context, *kube, []string) error {
		return setSuspendFlags(c, fs, true)
	},
}

var resumeCommand = command{
	name:    "resume",
	args:    "NAME",
	summary: "bring a suspended Projection's worker pods back (spec.suspend: false)",
	description: `Sets spec.suspend to false with a merge patch. The operator brings back
spec.replicas worker pods on the partition count it kept, with no
topology change, and they take up the events appended while suspended.

With --wait the command waits, up to --timeout, until the operator
reports Ready True (every worker pod ready) for this generation.`,
	examples: `  kubectl projectionist resume user-count
  kubectl projectionist resume user-count -n shop --wait --timeout 5m`,
	flags: func(c *cli, fs *pflag.FlagSet) func(context.Context, *kube, []string) error {
		return setSuspendFlags(c, fs, false)
	},
}

func setSuspendFlags(c *cli, fs *pflag.FlagSet, suspend bool) func(context.Context, *kube, []string) error {
	waitFlag := fs.Bool("wait", false, "wait until the operator reports the change done")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long --wait waits")
	return func(ctx context.Context, k *kube, args []string) error {
		name := args[0]
		if *timeout <= 0 {
			return usagef("--timeout must be positive, not %s", *timeout)
		}
		return c.setSuspend(ctx, k, name, suspend, *waitFlag, *timeout)
	}
}

// setSuspend patches spec.suspend and, with wait, waits for the operator
// to report the result.
func (c *cli) setSuspend(ctx context.Context, k *kube, name string, suspend, wait bool, timeout time.Duration) error {
	verb := map[bool]string{true: "suspended", false: "resumed"}[suspend]
	before, err := k.get(ctx, name)
	if err != nil {
		return err
	}
	p := before.DeepCopy()
	patch := fmt.Appendf(nil, `{"spec":{"suspend":%t}}`, suspend)
	if err := k.client.Patch(ctx, p, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return k.explain(err, name, k.namespace)
	}
	if before.Suspended() == suspend {
		fmt.Fprintf(c.stdout, "projection %q in namespace %q was already %s (spec.suspend: %t)\n", name, k.namespace, verb, suspend)
	} else {
		fmt.Fprintf(c.stdout, "projection %q in namespace %q %s (spec.suspend: %t, generation %d)\n", name, k.namespace, verb, suspend, p.Generation)
	}
	if !wait {
		return nil
	}
	done := suspendDone
	if !suspend {
		done = resumeDone
	}
	var last string
	// Each read runs on ctx, not on the wait's deadline: a read the
	// deadline would cut short (or the rate limiter would refuse) is not
	// an error, the wait just ends after it.
	err = waitFor(ctx, timeout, func(context.Context) (bool, error) {
		cur, err := k.get(ctx, name)
		if err != nil {
			return false, err
		}
		ok, why := done(cur, p.Generation)
		last = why
		return ok, nil
	})
	if err != nil {
		if wait := (waitTimeout{}); errors.As(err, &wait) {
			return fmt.Errorf("timed out after %s waiting for projection %q to be %s: %s", timeout, name, verb, last)
		}
		return err
	}
	fmt.Fprintf(c.stdout, "projection %q in namespace %q is %s: %s\n", name, k.namespace, verb, last)
	return nil
}

// waitTimeout is waitFor's error when cond never held.
type waitTimeout struct{}

func (waitTimeout) Error() string { return "timed out" }

// waitFor polls cond every pollInterval until it holds, fails, or timeout
// passes.
func waitFor(ctx context.Context, timeout time.Duration, cond wait.ConditionWithContextFunc) error {
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := wait.PollUntilContextCancel(tctx, pollInterval, true, cond)
	if err != nil && tctx.Err() != nil && ctx.Err() == nil {
		return waitTimeout{}
	}
	return err
}

// suspendDone says whether the operator reports p suspended for
// generation, and if not, what it reports.
func suspendDone(p *v1alpha1.Projection, generation int64) (bool, string) {
	ready, waiting := reportedReady(p, generation)
	switch {
	case ready == nil:
		return false, waiting
	case ready.Reason != v1alpha1.ReasonSuspended:
		return false, describeReady(ready)
	case p.Status.Replicas > 0:
		return false, fmt.Sprintf("Ready %s %s, %d worker pods still exist", ready.Status, ready.Reason, p.Status.Replicas)
	}
	return true, describeReady(ready)
}

// resumeDone says whether the operator reports p ready again for
// generation, and if not, what it reports.
func resumeDone(p *v1alpha1.Projection, generation int64) (bool, string) {
	ready, waiting := reportedReady(p, generation)
	if ready == nil {
		return false, waiting
	}
	return ready.Status == metav1.ConditionTrue, describeReady(ready)
}

// reportedReady returns p's Ready condition once the operator has
// reported on generation; before that, nil and what the wait is for.
func reportedReady(p *v1alpha1.Projection, generation int64) (*metav1.Condition, string) {
	ready := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
	if ready == nil || ready.ObservedGeneration < generation {
		return nil, fmt.Sprintf("the operator has not yet reported on generation %d", generation)
	}
	return ready, ""
}

func describeReady(c *metav1.Condition) string {
	s := fmt.Sprintf("Ready %s %s", c.Status, c.Reason)
	if c.Message != "" {
		s += ": " + c.Message
	}
	return s
}
