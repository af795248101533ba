package main

import (
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

// secret is a distinctive password: no output may contain it.
const secret = "S3cr3tPw9"

// secretDSNs are connection strings that hold secret, in the shapes of
// issue 12: malformed (an unencoded space, a quoted value with spaces or
// escapes, a bad port) and well-formed but unreachable (port 1).
var secretDSNs = []struct {
	name, dsn string
	valid     bool // parses; the server is unreachable
}{
	{"URL, unencoded space", "postgres://app:" + secret + " x@127.0.0.1:30373/app", false},
	{"URL, space before", "postgres://app:x " + secret + "@127.0.0.1:30373/app", false},
	{"URL, bad port", "postgres://app:" + secret + "@127.0.0.1:notaport/app", false},
	{"URL, bad escape", "postgres://app:" + secret + "%zz@127.0.0.1/app", false},
	{"URL query, unencoded space", "postgres://127.0.0.1:1/app?password=x " + secret + "&port=x", false},
	{"key=value, quoted with a space", "host=127.0.0.1 user=app password='x " + secret + "' port=notaport", false},
	{"key=value, quoted with an escape", `host=127.0.0.1 user=app password='x\' ` + secret + `' port=notaport`, false},
	{"key=value, unterminated quote", "host=127.0.0.1 user=app password='x " + secret, false},
	{"key=value, unquoted with a space", "host=127.0.0.1 user=app password=x " + secret + " dbname=app", false},
	{"URL, percent-encoded, unreachable", "postgres://app:" + url.PathEscape(secret+" x") + "@127.0.0.1:1/app?sslmode=disable&connect_timeout=2", true},
	{"URL query, unreachable", "postgres://127.0.0.1:1/app?user=app&password=" + secret + "&sslmode=disable", true},
	{"key=value, quoted, unreachable", "host=127.0.0.1 port=1 user=app password='x " + secret + "' sslmode=disable", true},
}

// TestPasswordNeverShown runs every subcommand that connects to a
// database with each connection string, from DATABASE_URL and from
// --database-url, and with the password in PGPASSWORD: the command fails
// (2 for a malformed one, 1 for an unreachable server) and its output
// does not hold the password.
func TestPasswordNeverShown(t *testing.T) {
	commands := [][]string{{"migrate"}, {"events", "generate", "--count", "1", "--progress", "0"}}
	for _, tc := range secretDSNs {
		want := 2
		if tc.valid {
			want = 1
		}
		for _, args := range commands {
			for _, via := range []string{"env", "flag"} {
				t.Run(tc.name+"/"+strings.Join(args[:min(2, len(args))], " ")+"/"+via, func(t *testing.T) {
					t.Parallel()
					env := map[string]string{"DATABASE_URL": tc.dsn}
					argv := args
					if via == "flag" {
						env, argv = nil, append(append([]string{}, args...), "--database-url", tc.dsn)
					}
					r := run(t, env, argv...)
					if r.code != want {
						t.Errorf("exit %d, want %d:\n%s", r.code, want, r)
					}
					if strings.Contains(r.stdout+r.stderr, secret) {
						t.Errorf("the password leaked:\n%s", r)
					}
				})
			}
		}
		if !tc.valid {
			t.Run(tc.name+"/worker", func(t *testing.T) {
				t.Parallel()
				r := run(t, map[string]string{"DATABASE_URL": tc.dsn, "HTTP_ADDR": "127.0.0.1:0"}, "worker")
				if r.code != 2 || strings.Contains(r.stdout+r.stderr, secret) {
					t.Errorf("want exit 2 without the password, got:\n%s", r)
				}
			})
		}
	}
	t.Run("PGPASSWORD", func(t *testing.T) {
		t.Parallel()
		env := map[string]string{"PGPASSWORD": secret, "PGHOST": "127.0.0.1", "PGPORT": "1", "PGUSER": "app", "PGSSLMODE": "disable"}
		for _, args := range commands {
			if r := run(t, env, args...); r.code != 1 || strings.Contains(r.stdout+r.stderr, secret) {
				t.Errorf("want exit 1 without the password, got:\n%s", r)
			}
		}
	})
}

// TestWorkerNeverShowsThePassword runs the worker against an unreachable
// server with the password in the connection string and in PGPASSWORD: it
// retries, logging why, and no log line holds the password.
func TestWorkerNeverShowsThePassword(t *testing.T) {
	for _, env := range []map[string]string{
		{"DATABASE_URL": "postgres://app:" + url.PathEscape(secret+" x") + "@127.0.0.1:1/app?sslmode=disable"},
		{"DATABASE_URL": "host=127.0.0.1 port=1 user=app password='x " + secret + "' sslmode=disable"},
		{"DATABASE_URL": "host=127.0.0.1 port=1 user=app sslmode=disable", "PGPASSWORD": secret},
	} {
		env["HTTP_ADDR"], env["TOTAL_PARTITIONS"], env["LOG_LEVEL"] = "127.0.0.1:0", "1", "debug"
		p := startProcess(t, "worker", env, "worker")
		waitFor(t, time.Minute, "a retry logged", func() (bool, error) {
			return strings.Contains(p.out.String(), "projections still not running"), nil
		})
		p.signal(t, syscall.SIGTERM)
		p.wait(t, time.Minute)
		if out := p.out.String(); strings.Contains(out, secret) || !strings.Contains(out, "connecting to the database") {
			t.Errorf("want retries that say why without the password, got:\n%s", out)
		}
	}
}
