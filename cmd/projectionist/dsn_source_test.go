package main

import (
	"strings"
	"testing"
)

// A malformed connection string is reported under the name of the flag or
// variable that held it, by every subcommand that connects, with exit 2
// and without the password: the user sees which of --database-url,
// DATABASE_URL and the PG* variables to fix.
func TestMalformedDSNNamesItsSource(t *testing.T) {
	commands := [][]string{
		{"migrate"},
		{"events", "generate", "--count", "1", "--progress", "0"},
		{"worker"},
		{"dead-letters", "list", "--projection", "x"},
		{"dead-letters", "show", "--projection", "x", "--id", "0190a0a0-0000-7000-8000-000000000000"},
		{"dead-letters", "retry", "--projection", "x", "--all"},
		{"dead-letters", "discard", "--projection", "x", "--all"},
		{"import"},
		{"forget", "--projection", "x", "--yes"},
		{"partition-indexes", "list"},
		{"partition-indexes", "create", "--partitions", "16"},
		{"partition-indexes", "drop", "--partitions", "16"},
	}
	const problem = "invalid database connection string: invalid port: must be a number between 1 and 65535"
	for _, args := range commands {
		name := args[0]
		if name == "events" || name == "dead-letters" || name == "partition-indexes" {
			name += " " + args[1]
		}
		for _, via := range []struct {
			name, source string
			env          map[string]string
			args         []string
		}{
			{"flag", "--database-url", nil, []string{"--database-url", "postgres://app:" + secret + "@127.0.0.1:notaport/app"}},
			{"variable", "DATABASE_URL", map[string]string{"DATABASE_URL": "host=127.0.0.1 port=notaport password=" + secret}, nil},
			{"PG* variables", "the PG* variables", map[string]string{"PGHOST": "127.0.0.1", "PGPORT": "notaport", "PGPASSWORD": secret}, nil},
		} {
			t.Run(name+"/"+via.name, func(t *testing.T) {
				t.Parallel()
				env := map[string]string{"HTTP_ADDR": "127.0.0.1:0"} // the worker's, should it start
				for k, v := range via.env {
					env[k] = v
				}
				r := run(t, env, append(append([]string{}, args...), via.args...)...)
				want := "projectionist " + name + ": " + via.source + ": " + problem
				if name == "worker" && via.source == "the PG* variables" {
					// Found by worker.Run rather than worker.ParseConfig.
					want = "projectionist worker: invalid worker config: the PG* variables: " + problem
				}
				if first, _, _ := strings.Cut(r.stderr, "\n"); r.code != 2 || first != want {
					t.Errorf("want exit 2 and first line %q, got\n%s", want, r)
				}
				if strings.Contains(r.stdout+r.stderr, secret) {
					t.Errorf("the password leaked:\n%s", r)
				}
			})
		}
	}
}
