// Command flakes runs go test several times under CPU contention and lists
// every test that failed at least once, with how often: `make test-flakes`.
//
//	flakes [-runs N] [-burn N] [-out DIR] [--] GO_TEST_ARGS...
//
// Each run is `go test -json -count=1 GO_TEST_ARGS`, and its JSON stream
// is kept in DIR/run-K.json. Beside the runs, -burn goroutines (by default
// one per CPU) spin for the whole time: a test that waits on the wall
// clock instead of a signal fails here far more often than on an idle
// machine, which is the point. A package that fails without a failing
// test (it did not build, its TestMain failed, it timed out) is listed as
// "(package)".
//
// It prints the failures and the total time, and exits 0 when no test
// failed, 1 when some did, 2 on bad usage or when go test could not run.
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

func main() {
	runs := flag.Int("runs", 5, "how many times to run the tests")
	burn := flag.Int("burn", runtime.NumCPU(), "goroutines spinning beside the tests (0: none)")
	out := flag.String("out", filepath.Join(os.TempDir(), "flakes"), "directory for each run's go test -json stream")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: flakes [-runs N] [-burn N] [-out DIR] [--] GO_TEST_ARGS...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *runs < 1 || *burn < 0 || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "flakes:", err)
		os.Exit(2)
	}

	ctx, stopBurning := context.WithCancel(context.Background())
	var burners sync.WaitGroup
	for range *burn {
		burners.Go(func() { spin(ctx) })
	}
	began := time.Now()
	tally := newTally()
	for run := 1; run <= *runs; run++ {
		path := filepath.Join(*out, fmt.Sprintf("run-%d.json", run))
		fmt.Printf("flakes: run %d of %d: go test -json -count=1 %s (stream in %s)\n", run, *runs, strings.Join(flag.Args(), " "), path)
		if err := runOnce(path, flag.Args(), tally); err != nil {
			stopBurning()
			fmt.Fprintln(os.Stderr, "flakes:", err)
			os.Exit(2)
		}
	}
	stopBurning()
	burners.Wait()
	fmt.Print(tally.report(*runs, *burn, time.Since(began)))
	if len(tally.failures) > 0 {
		os.Exit(1)
	}
}

// spin keeps one CPU busy until ctx ends.
func spin(ctx context.Context) {
	for x := uint64(1); ctx.Err() == nil; {
		for range 1 << 16 {
			x = x*6364136223846793005 + 1442695040888963407
		}
		if x == 0 {
			runtime.Gosched() // never: keeps x alive
		}
	}
}

// runOnce runs go test once, writing its JSON stream to path and counting
// its failures in tally. A failing go test is no error: its failures are
// in the stream.
func runOnce(path string, args []string, tally *tally) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command("go", append([]string{"test", "-json", "-count=1"}, args...)...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting go test: %w", err)
	}
	failed, err := parse(io.TeeReader(stdout, f))
	if werr := cmd.Wait(); werr != nil {
		var exit *exec.ExitError
		if !errors.As(werr, &exit) {
			return fmt.Errorf("go test: %w", werr)
		}
	}
	if err != nil {
		return fmt.Errorf("reading go test -json: %w", err)
	}
	tally.add(failed)
	return nil
}

// event is the part of a go test -json event (cmd/test2json) we read.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	// ImportPath names the package of a build-output event, which has
	// no Package: "example.com/p [example.com/p.test]".
	ImportPath string
}

// failure is one failing test of one run: Test is "" for a package that
// failed with no failing test of its own.
type failure struct {
	Package, Test string
}

// maxOutputLines bounds how much of a failure's output the report quotes.
const maxOutputLines = 30

// parse reads a go test -json stream and returns each failure with its
// output (the test's own lines; for a package, its lines outside tests).
func parse(r io.Reader) (map[failure][]string, error) {
	output := map[failure][]string{}
	failed := map[failure][]string{}
	// failedTests counts, per package, its tests that failed: a package
	// whose failure they explain is not listed on its own.
	failedTests := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue // go test prints build errors outside the stream before Go 1.24
		}
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("%q: %w", line, err)
		}
		if e.Package == "" {
			e.Package, _, _ = strings.Cut(e.ImportPath, " ")
		}
		key := failure{e.Package, e.Test}
		switch e.Action {
		case "output", "build-output":
			output[key] = append(output[key], strings.TrimRight(e.Output, "\n"))
		case "fail": // a build failure is also a fail of its package
			if e.Test != "" {
				failedTests[e.Package]++
			} else if failedTests[e.Package] > 0 {
				continue
			}
			failed[key] = output[key]
		}
	}
	return failed, sc.Err()
}

// tally is the failures of every run so far.
type tally struct {
	failures map[failure]int
	// output is each failure's output in the first run it failed in.
	output map[failure][]string
}

func newTally() *tally {
	return &tally{failures: map[failure]int{}, output: map[failure][]string{}}
}

func (t *tally) add(failed map[failure][]string) {
	for f, out := range failed {
		t.failures[f]++
		if _, ok := t.output[f]; !ok {
			t.output[f] = out
		}
	}
}

// report lists the failures, most frequent first, each with the output
// of its first failure (the last maxOutputLines lines).
func (t *tally) report(runs, burn int, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nflakes: %d runs beside %d spinning goroutines in %s: ", runs, burn, took.Round(time.Second))
	if len(t.failures) == 0 {
		b.WriteString("no test failed\n")
		return b.String()
	}
	fmt.Fprintf(&b, "%d tests failed at least once\n", len(t.failures))
	keys := slices.SortedFunc(maps.Keys(t.failures), func(x, y failure) int {
		if d := t.failures[y] - t.failures[x]; d != 0 {
			return d
		}
		return strings.Compare(x.Package+" "+x.Test, y.Package+" "+y.Test)
	})
	for _, f := range keys {
		fmt.Fprintf(&b, "FAIL %d/%d  %s %s\n", t.failures[f], runs, f.Package, cmp.Or(f.Test, "(package)"))
	}
	for _, f := range keys {
		out := t.output[f]
		if len(out) > maxOutputLines {
			out = out[len(out)-maxOutputLines:]
		}
		fmt.Fprintf(&b, "\n--- first failure of %s %s:\n%s\n", f.Package, cmp.Or(f.Test, "(package)"), strings.Join(out, "\n"))
	}
	return b.String()
}
