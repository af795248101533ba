package dbconn_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/dbconn"
	"github.com/projectionist/projectionist/internal/pgtest"
)

// Require is the one "no database" check of the operator's workers, the
// worker program and every CLI subcommand.
func TestRequire(t *testing.T) {
	tests := []struct {
		name string
		dsn  string
		env  map[string]string
		want bool // a database is named
	}{
		{"a connection string", "postgres://app@db/app", nil, true},
		{"PGHOST", "", map[string]string{"PGHOST": "db"}, true},
		{"PGSERVICE", "", map[string]string{"PGSERVICE": "app"}, true},
		{"PGDATABASE", "", map[string]string{"PGDATABASE": "app"}, true},
		{"nothing", "", nil, false},
		{"only a password", "", map[string]string{"PGPASSWORD": "x", "PGUSER": "app"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := dbconn.Require(tc.dsn, func(k string) string { return tc.env[k] })
			if got := err == nil; got != tc.want {
				t.Fatalf("Require: %v, want a database named: %t", err, tc.want)
			}
			if err != nil && (!errors.Is(err, dbconn.ErrNoDatabase) || !strings.Contains(err.Error(), "set DATABASE_URL or pass --database-url")) {
				t.Errorf("error %q does not match ErrNoDatabase or does not say how to name one", err)
			}
		})
	}
}

// NewPool applies the options and connects only on first use; Open
// connects at once and says where it could not.
func TestNewPoolAndOpen(t *testing.T) {
	ctx := t.Context()
	dsn := pgtest.NewDatabase(t)
	configured := false
	pool, err := dbconn.NewPool(dsn+"&pool_max_conns=20", dbconn.Options{Application: "dbconn-test", MaxConns: 3,
		MaxConnIdleTime: time.Minute, Configure: func(*pgxpool.Config) error { configured = true; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	cfg := pool.Config()
	if cfg.MaxConns != 3 || cfg.MaxConnIdleTime != time.Minute || !configured {
		t.Errorf("MaxConns %d, MaxConnIdleTime %s, Configure called %t: want 3 over the DSN's 20, 1m, true",
			cfg.MaxConns, cfg.MaxConnIdleTime, configured)
	}
	var app string
	if err := pool.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&app); err != nil || app != "dbconn-test" {
		t.Errorf("application_name %q (%v), want dbconn-test", app, err)
	}

	refused := errors.New("the mounted CA is not PEM")
	if _, err := dbconn.NewPool(dsn, dbconn.Options{Configure: func(*pgxpool.Config) error { return refused }}); !errors.Is(err, refused) {
		t.Errorf("a Configure failure gave %v, want it as it is", err)
	}
	const secret = "Pw0rdNotShown"
	if _, err := dbconn.NewPool("postgres://app:"+secret+"@db:notaport/app", dbconn.Options{}); !errors.Is(err, dbconn.ErrInvalidDSN) ||
		strings.Contains(err.Error(), secret) {
		t.Errorf("a malformed DSN gave %v, want ErrInvalidDSN without the password", err)
	}
	// Nothing listens on port 1: NewPool does not notice, Open does.
	down := "postgres://app:" + secret + "@127.0.0.1:1/app?sslmode=disable&connect_timeout=5"
	lazy, err := dbconn.NewPool(down, dbconn.Options{})
	if err != nil {
		t.Fatalf("NewPool connected, or refused the DSN: %v", err)
	}
	lazy.Close()
	_, err = dbconn.Open(ctx, down, dbconn.Options{})
	var ce *dbconn.ConnectError
	if !errors.As(err, &ce) || !errors.Is(err, dbconn.ErrUnreachable) || !dbconn.Unreachable(err) ||
		ce.Target != "app@127.0.0.1:1/app" || strings.Contains(err.Error(), secret) {
		t.Errorf("Open of a closed port gave %v, want a ConnectError to app@127.0.0.1:1/app without the password", err)
	}
}

// Unreachable is the one classification of "the database could not be
// reached or the connection was lost", which the operator's Degraded
// reason and the worker's readiness state both use.
func TestUnreachable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{&dbconn.ConnectError{Target: "app@db:5432/app", Err: errors.New("refused")}, true},
		{fmt.Errorf("reading: %w", io.ErrUnexpectedEOF), true},
		{&pgconn.PgError{Code: "57P01"}, true},  // admin_shutdown
		{&pgconn.PgError{Code: "08006"}, true},  // connection_failure
		{&pgconn.PgError{Code: "42P01"}, false}, // undefined_table
		{errors.New("handler failed"), false},
		{context.Canceled, false},
	}
	for _, tc := range tests {
		if got := dbconn.Unreachable(tc.err); got != tc.want {
			t.Errorf("Unreachable(%v) = %t, want %t", tc.err, got, tc.want)
		}
	}
}
