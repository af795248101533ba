package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

var listCommand = command{
	name:    "list",
	args:    "",
	summary: "list the Projections of a namespace (or all, with -A) with their readiness, lag and suspension",
	description: `Lists the Projections of the namespace, or of every namespace with -A:
NAME, READY and STATUS (the Ready condition's status and reason),
PARTITIONS (the partition count in the database), LAG (events still to
pass), SUSPENDED (spec.suspend) and AGE.`,
	examples: `  kubectl projectionist list
  kubectl projectionist list -n shop
  kubectl projectionist list -A`,
	flags: func(c *cli, fs *pflag.FlagSet) func(context.Context, *kube, []string) error {
		all := fs.BoolP("all-namespaces", "A", false, "list the Projections of every namespace")
		return func(ctx context.Context, k *kube, _ []string) error {
			return c.list(ctx, k, *all)
		}
	},
}

func (c *cli) list(ctx context.Context, k *kube, all bool) error {
	var list v1alpha1.ProjectionList
	var opts []client.ListOption
	if !all {
		opts = append(opts, client.InNamespace(k.namespace))
	}
	if err := k.client.List(ctx, &list, opts...); err != nil {
		return k.explain(err, "", k.namespace)
	}
	if len(list.Items) == 0 {
		if all {
			fmt.Fprintln(c.stderr, "No Projections found.")
		} else {
			fmt.Fprintf(c.stderr, "No Projections found in namespace %q.\n", k.namespace)
		}
		return nil
	}
	fmt.Fprint(c.stdout, formatList(list.Items, c.now(), all))
	return nil
}
