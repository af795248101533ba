package worker

import (
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/projectionist/projectionist/internal/proctest"
	"github.com/projectionist/projectionist/pkg/projection"
)

func TestMainExitCodes(t *testing.T) {
	dsn, pool := newDatabase(t)
	evs := mustAppend(t, pool, "Happened", "Poison")
	projections := []projection.Projection{applyOnce{name: "picky"}}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		code int
		want []string
	}{
		{name: "help", args: []string{"-h"}, code: 0, want: []string{"Usage:", "--database-url dsn", "DATABASE_URL"}},
		{name: "bad flag", args: []string{"--batch-size=0"}, code: 2,
			want: []string{`--batch-size "0": must be an integer between 1 and 10000 (run with -h for the flags and variables)`}},
		{name: "bad variable", env: map[string]string{"POD_NAME": "web"}, code: 2,
			want: []string{`POD_NAME "web": has no ordinal suffix`}},
		{name: "unknown projection", env: map[string]string{"PROJECTION": "nope", "DATABASE_URL": dsn}, code: 2,
			want: []string{`"msg":"invalid worker configuration"`, `unknown projection \"nope\"; this worker has picky`}},
		{name: "poison event", env: map[string]string{"DATABASE_URL": dsn, "TOTAL_PARTITIONS": "1", "HTTP_ADDR": "127.0.0.1:0"}, code: 1,
			want: []string{`"msg":"worker failed"`, evs[1].EventID.String(), "Poison"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr proctest.SyncBuffer
			if got := (Program{Projections: projections}).exitCode(tc.args, env(tc.env), &stderr); got != tc.code {
				t.Errorf("exit code = %d, want %d", got, tc.code)
			}
			for _, want := range tc.want {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr does not contain %s:\n%s", want, stderr.String())
				}
			}
		})
	}
}

func TestMainExitsZeroOnSIGTERM(t *testing.T) {
	dsn, pool := newDatabase(t)
	mustAppend(t, pool, repeat("Happened", 5)...)
	var stderr proctest.SyncBuffer
	code := make(chan int, 1)
	go func() {
		code <- Program{Projections: []projection.Projection{applyOnce{name: "calm"}}}.exitCode(nil, env(map[string]string{"DATABASE_URL": dsn, "TOTAL_PARTITIONS": "1", "HTTP_ADDR": "127.0.0.1:0",
			"POLL_INTERVAL": "10ms", "LOG_FORMAT": "text"}), &stderr)
	}()
	// Events applied: Main is running and handles signals.
	waitFor(t, "every event applied", func() bool { return count(t, pool, "SELECT count(*) FROM applied") == 5 })
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-code:
		if got != 0 {
			t.Errorf("exit code = %d, want 0\n%s", got, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("Main did not stop on SIGTERM")
	}
	if !strings.Contains(stderr.String(), `msg="worker stopped"`) {
		t.Errorf("no graceful stop in the log:\n%s", stderr.String())
	}
}

// TestUnreachableDatabase starts a worker whose database does not answer:
// it keeps retrying, not ready, and shows no password anywhere.
func TestUnreachableDatabase(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	var logs proctest.SyncBuffer
	cfg := Config{DatabaseURL: "postgres://alice:s3cret@" + addr + "/app?connect_timeout=5", TotalPartitions: 1, LogLevel: slog.LevelDebug}
	cfg.Logger = cfg.newLogger(&logs)
	r := start(t, cfg, applyOnce{name: "patient"})

	waitFor(t, "not ready: retrying", func() bool {
		code, body := get(r.url + "/readyz")
		return code == 503 && strings.Contains(body, "not running (database unreachable), retrying: connecting to the database")
	})
	waitFor(t, "two more attempts", func() bool { return strings.Count(logs.String(), "projections still not running") >= 2 })
	if code, _ := get(r.url + "/healthz"); code != 200 {
		t.Errorf("/healthz = %d, want 200: the process is alive", code)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("run = %v, want nil", err)
	}
	if strings.Contains(logs.String(), "s3cret") {
		t.Errorf("the log shows the password:\n%s", logs.String())
	}
	if n := strings.Count(logs.String(), `"level":"WARN"`); n != 1 {
		t.Errorf("warned %d times, want once for the whole outage:\n%s", n, logs.String())
	}
}
