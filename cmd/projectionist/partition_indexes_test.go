package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/projectionist/projectionist/pkg/projection"
)

// partition-indexes create builds the index once and says so, list shows
// it with the projection of that count, drop removes it; a count below 2
// is bad usage.
func TestPartitionIndexes(t *testing.T) {
	dsn, pool, _ := deadLetterDB(t) // revenue, one partition
	if _, err := projection.SetTopology(t.Context(), pool, "wide", 8); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DATABASE_URL": dsn}

	r := run(t, env, "partition-indexes", "list")
	if r.code != 0 || r.stdout != "no partition indexes\n" {
		t.Errorf("list before any build: want \"no partition indexes\"\n%s", r)
	}
	r = run(t, env, "partition-indexes", "create", "--partitions", "8")
	if r.code != 0 || !regexp.MustCompile(`^built partition index events_partitions_8_idx for 8 partitions in [0-9.]+m?s\n$`).MatchString(r.stdout) {
		t.Errorf("create: want it built\n%s", r)
	}
	r = run(t, env, "partition-indexes", "create", "--partitions", "8")
	if r.code != 0 || r.stdout != "partition index events_partitions_8_idx for 8 partitions is there already, valid\n" {
		t.Errorf("create again: want it there already\n%s", r)
	}
	r = run(t, env, "partition-indexes", "list")
	if r.code != 0 || !regexp.MustCompile(`(?m)^8 +events_partitions_8_idx +valid +[0-9.]+ KiB +wide$`).MatchString(r.stdout) {
		t.Errorf("list: want the valid index for 8 partitions, used by wide\n%s", r)
	}
	r = run(t, env, "partition-indexes", "drop", "--partitions", "8")
	if r.code != 0 || r.stdout != "dropped partition index events_partitions_8_idx, if there was one\n" {
		t.Errorf("drop\n%s", r)
	}
	if ixs, err := projection.PartitionIndexes(t.Context(), pool); err != nil || len(ixs) != 0 {
		t.Errorf("after drop: partition indexes %+v, %v; want none", ixs, err)
	}
	for _, cmd := range []string{"create", "drop"} {
		for _, args := range [][]string{nil, {"--partitions", "1"}} {
			r = run(t, env, append([]string{"partition-indexes", cmd}, args...)...)
			if r.code != 2 || !strings.Contains(r.stderr, "a partition index serves 2 or more partitions") {
				t.Errorf("%s %v: want exit 2 naming the minimum\n%s", cmd, args, r)
			}
		}
	}
}
