package main

import (
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testdata/stream.json is go test -json -count=1 ./... of a module with
// four packages: ok (a passing and a skipped test), flaky (a failing test
// and a table with a failing subtest), broken (does not build) and exits
// (its TestMain exits 3 before any test).
func TestParseRecordedStream(t *testing.T) {
	f, err := os.Open("testdata/stream.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	failed, err := parse(f)
	if err != nil {
		t.Fatal(err)
	}
	want := []failure{
		{"example.com/rec/broken", ""},
		{"example.com/rec/exits", ""},
		{"example.com/rec/flaky", "TestFails"},
		{"example.com/rec/flaky", "TestTable"},
		{"example.com/rec/flaky", "TestTable/bad"},
	}
	got := slices.SortedFunc(maps.Keys(failed), func(x, y failure) int {
		return strings.Compare(x.Package+" "+x.Test, y.Package+" "+y.Test)
	})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("failures (-want +got):\n%s", diff)
	}
	for f, substr := range map[failure]string{
		{"example.com/rec/broken", ""}:             "undefined: undefined",
		{"example.com/rec/exits", ""}:              "no database",
		{"example.com/rec/flaky", "TestFails"}:     "want 120m, got 119m",
		{"example.com/rec/flaky", "TestTable/bad"}: "condition never held",
	} {
		if out := strings.Join(failed[f], "\n"); !strings.Contains(out, substr) {
			t.Errorf("output of %v does not say %q:\n%s", f, substr, out)
		}
	}
}

// The report counts each failure over the runs, most frequent first.
func TestReport(t *testing.T) {
	tally := newTally()
	tally.add(map[failure][]string{{"p", "TestA"}: {"first"}, {"q", ""}: {"FAIL q [build failed]"}})
	tally.add(map[failure][]string{{"p", "TestA"}: {"second"}})
	tally.add(nil)
	got := tally.report(3, 2, 90*time.Second)
	want := `
flakes: 3 runs beside 2 spinning goroutines in 1m30s: 2 tests failed at least once
FAIL 2/3  p TestA
FAIL 1/3  q (package)

--- first failure of p TestA:
first

--- first failure of q (package):
FAIL q [build failed]
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	if got := newTally().report(5, 2, time.Minute); got != "\nflakes: 5 runs beside 2 spinning goroutines in 1m0s: no test failed\n" {
		t.Errorf("report of no failures = %q", got)
	}
}
