package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// prog is how kubectl users type the plugin.
const prog = "kubectl projectionist"

// requestTimeout bounds each API request, so an unreachable server fails
// instead of hanging.
const requestTimeout = 30 * time.Second

// cli is one invocation: where it writes and what time it is.
type cli struct {
	stdout, stderr io.Writer
	now            func() time.Time
}

func newCLI(stdout, stderr io.Writer) *cli {
	return &cli{stdout: stdout, stderr: stderr, now: time.Now}
}

// command is a subcommand.
type command struct {
	name, args  string // "status", "NAME"
	summary     string
	description string
	examples    string
	// flags adds the command's own flags and returns what runs it once
	// they are parsed.
	flags func(c *cli, fs *pflag.FlagSet) func(ctx context.Context, k *kube, args []string) error
}

// commands lists the subcommands in the order help shows them.
var commands = []command{statusCommand, rebuildCommand, suspendCommand, resumeCommand,
	deadLettersListCommand, deadLettersRetryCommand, deadLettersDiscardCommand, listCommand}

const topUsage = `Usage: kubectl projectionist <command> [flags]

kubectl projectionist shows and operates Projections (projectionist.dev)
through the Kubernetes API server only: it never connects to the database,
so RBAC on projections is all it needs.

Commands:
%s
Flags of every command:
%s
Run 'kubectl projectionist <command> --help' for a command's flags and examples.

Examples:
  kubectl projectionist list -A
  kubectl projectionist status user-count -n shop
  kubectl projectionist rebuild revenue -n shop --wait
  kubectl projectionist suspend user-count -n shop --wait
  kubectl projectionist dead-letters retry revenue -n shop --all --wait
`

func (c *cli) topUsage(w io.Writer) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 3, ' ', 0)
	for _, cmd := range commands {
		fmt.Fprintf(tw, "  %s\t%s\n", cmd.name, cmd.summary)
	}
	tw.Flush()
	fs := pflag.NewFlagSet(prog, pflag.ContinueOnError)
	addKubeFlags(fs)
	fmt.Fprintf(w, topUsage, b.String(), fs.FlagUsages())
}

// run dispatches args (without the program name) and returns the exit code.
func (c *cli) run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		c.topUsage(c.stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		if len(args) > 1 && args[0] == "help" {
			return c.run(ctx, append(slices.Clone(args[1:]), "--help"))
		}
		c.topUsage(c.stdout)
		return exitOK
	}
	for _, cmd := range commands {
		// A command's name is one word or two ("dead-letters list").
		if words := strings.Fields(cmd.name); len(args) >= len(words) && slices.Equal(args[:len(words)], words) {
			return c.runCommand(ctx, cmd, args[len(words):])
		}
	}
	fmt.Fprintf(c.stderr, "%s: unknown command %q\nRun '%s --help' for the list of commands.\n", prog, args[0], prog)
	return exitUsage
}

func (c *cli) runCommand(ctx context.Context, cmd command, args []string) int {
	fs := pflag.NewFlagSet(cmd.name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse errors are reported by fail
	fs.SortFlags = true
	kf := addKubeFlags(fs)
	runFn := cmd.flags(c, fs)
	err := fs.Parse(args)
	if err == nil {
		err = checkArgs(cmd, fs.Args())
	}
	switch {
	case errors.Is(err, pflag.ErrHelp):
		fmt.Fprintf(c.stdout, "Usage: %s %s %s [flags]\n\n%s\n\nFlags:\n%s\nExamples:\n%s\n",
			prog, cmd.name, cmd.args, strings.TrimSpace(cmd.description), fs.FlagUsages(), strings.TrimRight(cmd.examples, "\n"))
		return exitOK
	case err != nil:
		return c.fail(cmd.name, usagef("%v", err))
	}
	k, err := kf.connect()
	if err != nil {
		return c.fail(cmd.name, err)
	}
	return c.fail(cmd.name, runFn(ctx, k, fs.Args()))
}

// usageError is bad input: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// fail reports err for the command and returns its exit code: 0 for no
// error, 2 for a usage error, 1 otherwise.
func (c *cli) fail(name string, err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(c.stderr, "%s %s: %s\nRun '%s %s --help' for usage.\n", prog, name, err, prog, name)
		return exitUsage
	}
	fmt.Fprintf(c.stderr, "%s %s: %s\n", prog, name, err)
	return exitFailure
}

// checkArgs checks the arguments after the flags before any connection:
// one NAME for a command whose args say NAME, none otherwise.
func checkArgs(cmd command, args []string) error {
	want := 0
	if cmd.args == "NAME" {
		if len(args) == 0 {
			return usagef("missing the Projection's NAME")
		}
		want = 1
	}
	if len(args) > want {
		return usagef("unexpected argument %q", args[want])
	}
	return nil
}

// kubeFlags are kubectl's flags for choosing the cluster and namespace.
type kubeFlags struct {
	kubeconfig, context, namespace string
	requestTimeout                 time.Duration
}

func addKubeFlags(fs *pflag.FlagSet) *kubeFlags {
	k := &kubeFlags{}
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "path of the kubeconfig file (default $KUBECONFIG, else ~/.kube/config, else the in-cluster service account)")
	fs.StringVar(&k.context, "context", "", "kubeconfig context to use (default the current context)")
	fs.StringVarP(&k.namespace, "namespace", "n", "", "namespace of the Projection (default the context's namespace, else \"default\")")
	fs.DurationVar(&k.requestTimeout, "request-timeout", requestTimeout, "how long one API request may take")
	return k
}

// kube is a client for one cluster and the namespace the flags chose.
type kube struct {
	client    client.Client
	namespace string
	host      string
}

// connect loads the configuration the way kubectl does: --kubeconfig,
// else $KUBECONFIG, else ~/.kube/config, else in-cluster; then --context
// and --namespace override it.
func (k *kubeFlags) connect() (*kube, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = k.kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: k.context}
	overrides.Context.Namespace = k.namespace
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		return nil, usagef("no cluster configured: pass --kubeconfig, set KUBECONFIG, create ~/.kube/config, or run in a pod")
	}
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, fmt.Errorf("choosing the namespace: %w", err)
	}
	cfg.Timeout = k.requestTimeout
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("building the scheme: %w", err)
	}
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating a client for %s: %w", cfg.Host, err)
	}
	return &kube{client: cl, namespace: ns, host: cfg.Host}, nil
}

// explain turns an API error into one a user can act on.
func (k *kube) explain(err error, name, namespace string) error {
	var netErr net.Error
	switch {
	case err == nil:
		return nil
	case apierrors.IsNotFound(err) && name != "":
		return fmt.Errorf("projection %q not found in namespace %q", name, namespace)
	case meta.IsNoMatchError(err) || apierrors.IsNotFound(err):
		return fmt.Errorf("the Projection API (%s) is not installed in the cluster at %s: install the projectionist operator and its CRD", v1alpha1.GroupVersion, k.host)
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		return fmt.Errorf("not allowed: %w", err)
	case errors.As(err, &netErr):
		return fmt.Errorf("cannot reach the Kubernetes API server at %s: %w", k.host, err)
	}
	return err
}

// get reads one Projection.
func (k *kube) get(ctx context.Context, name string) (*v1alpha1.Projection, error) {
	p := &v1alpha1.Projection{}
	err := k.client.Get(ctx, client.ObjectKey{Namespace: k.namespace, Name: name}, p)
	return p, k.explain(err, name, k.namespace)
}
