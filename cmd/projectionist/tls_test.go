package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/projectionist/projectionist/internal/pgtest"
)

// TestWorkerTLS runs the worker against a PostgreSQL that takes only TLS
// connections (pgtest.StartTLS), with sslmode=verify-full, the two ways a
// pod verifies the server: a private CA named by sslrootcert (a mounted
// bundle), and the system roots, which the stock image's
// /etc/ssl/certs/ca-certificates.crt provides and SSL_CERT_FILE stands in
// for here. Against a CA it does not trust, the worker keeps retrying,
// not ready, says why, and never prints the password.
func TestWorkerTLS(t *testing.T) {
	srv := pgtest.StartTLS(t)
	rootcert := "sslmode=verify-full&sslrootcert=" + srv.CA.CertFile

	// A bundle like the image's: the machine's roots, if any, and the test
	// CA.
	bundle := filepath.Join(t.TempDir(), "ca-certificates.crt")
	system, _ := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err := os.WriteFile(bundle, append(system, srv.CA.CertPEM...), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		query string            // of the worker's DATABASE_URL
		env   map[string]string // more of the worker's environment
	}{
		{"sslrootcert", rootcert, nil},
		{"system roots", "sslmode=verify-full", map[string]string{"SSL_CERT_FILE": bundle}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := srv.NewDatabase(t)
			setup := srv.URL(db, rootcert)
			migrate(t, setup)
			generate(t, setup, "--count", "300", "--aggregates", "20")
			env := map[string]string{"PARTITION_KEY": "0", "TOTAL_PARTITIONS": "1"}
			for k, v := range tc.env {
				env[k] = v
			}
			w := startWorker(t, "worker ("+tc.name+")", srv.URL(db, tc.query), env)
			pool := pgtest.OpenPool(t, setup)
			waitCaughtUp(t, pool, time.Minute, allProjections, w)
			w.stop(t, 30*time.Second)
			verifyActivityLog(t, pool)
			verifyRevenue(t, pool)
			verifyUserStats(t, pool)
			if out := w.out.String(); strings.Contains(out, srv.Password) {
				t.Errorf("the password leaked:\n%s", out)
			}
		})
	}

	wrongCA := pgtest.NewCA(t, "wrong CA")
	for _, tc := range []struct {
		name  string
		query string
		env   map[string]string
	}{
		{"sslrootcert of another CA", "sslmode=verify-full&sslrootcert=" + wrongCA.CertFile, nil},
		// The system-roots path with roots that lack the test CA.
		{"system roots of another CA", "sslmode=verify-full", map[string]string{"SSL_CERT_FILE": wrongCA.CertFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const reason = "x509: certificate signed by unknown authority"
			db := srv.NewDatabase(t)
			env := map[string]string{"PARTITION_KEY": "0", "TOTAL_PARTITIONS": "1"}
			for k, v := range tc.env {
				env[k] = v
			}
			w := startWorker(t, "worker ("+tc.name+")", srv.URL(db, tc.query), env)
			addr := w.httpAddr(t)
			var logged string
			waitFor(t, 30*time.Second, "the worker to log why it cannot connect", func() (bool, error) {
				if err := mustRunning(w); err != nil {
					t.Fatal(err)
				}
				recs := w.logLines("projections not running; retrying with backoff")
				if len(recs) == 0 {
					return false, nil
				}
				logged, _ = recs[0]["error"].(string)
				return true, nil
			})
			t.Logf("the worker logged: %s", logged)
			if !strings.Contains(logged, reason) || !strings.Contains(logged, "connecting to the database") {
				t.Errorf("the worker logged %q, want it to say connecting to the database failed: %s", logged, reason)
			}
			code, body, err := readyz(addr)
			if err != nil || code != 503 || !strings.Contains(body, reason) {
				t.Errorf("/readyz = %d %q (%v), want 503 saying %s", code, body, err, reason)
			}
			w.signal(t, syscall.SIGTERM)
			if code := w.wait(t, 30*time.Second); code != 0 {
				t.Errorf("the worker exited with %d after SIGTERM, want 0", code)
			}
			if out := w.out.String(); strings.Contains(out, srv.Password) {
				t.Errorf("the password leaked:\n%s", out)
			}
			if strings.Contains(body, srv.Password) {
				t.Errorf("/readyz shows the password: %s", body)
			}
		})
	}
}
