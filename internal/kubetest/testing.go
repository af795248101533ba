package kubetest

import (
	"fmt"
	"os"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// New starts an Env with opts for one test (see [Start]), stopped when the
// test ends.
func New(tb testing.TB, opts Options) *Env {
	tb.Helper()
	env, err := Start(opts)
	if err != nil {
		tb.Fatalf("starting the API server: %v", err)
	}
	tb.Cleanup(func() {
		if err := env.Stop(); err != nil {
			tb.Errorf("stopping the API server: %v", err)
		}
	})
	return env
}

// RunTests starts an Env with opts for the tests of m, calls setup with it
// (clients, objects and processes the tests share), runs the tests, calls
// the teardown setup returned (when not nil) and stops the Env. It returns
// the exit code for os.Exit: the tests', or 1, with the error on stderr,
// when the start, setup or teardown failed.
func RunTests(m *testing.M, opts Options, setup func(*Env) (teardown func() error, err error)) int {
	env, err := Start(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the API server: %v\n", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping the API server: %v\n", err)
		}
	}()
	teardown, err := setup(env)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	if teardown != nil {
		if err := teardown(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	return code
}

// NewClient returns a client of the Env's admin config whose scheme holds
// the types the adders add.
func (e *Env) NewClient(adders ...func(*runtime.Scheme) error) (client.Client, error) {
	scheme := runtime.NewScheme()
	for _, add := range adders {
		if err := add(scheme); err != nil {
			return nil, fmt.Errorf("building the scheme: %w", err)
		}
	}
	c, err := client.New(e.Config, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating the client: %w", err)
	}
	return c, nil
}
