// Package dbconn is the one way projectionist's programs connect to
// PostgreSQL: the operator, the worker and every CLI subcommand parse a
// connection string (URL or key=value), bound the connection's waits, and
// report a malformed, missing, unreachable or unresponsive database with
// the same errors, none of which ever holds a password.
//
// Connection strings are never echoed: [ParseConfig] describes what is
// wrong in words of its own, and a [Redactor] removes a known password
// from any text that might still carry it.
package dbconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults of [Options].
const (
	// DefaultConnectTimeout bounds establishing one connection: TCP,
	// TLS, authentication and the server's first answer.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultKeepAliveIdle, DefaultKeepAliveInterval and
	// DefaultKeepAliveCount are the TCP keepalive probes: a peer that
	// vanished (a network cut, a host that died) is noticed after about
	// idle + interval*count on an idle connection.
	DefaultKeepAliveIdle     = 10 * time.Second
	DefaultKeepAliveInterval = 5 * time.Second
	DefaultKeepAliveCount    = 3
	// DefaultTCPUserTimeout bounds how long sent data may stay
	// unacknowledged before the kernel drops the connection (Linux's
	// TCP_USER_TIMEOUT): a blackholed network fails a query in flight
	// instead of hanging it for the kernel's ~15 minutes of
	// retransmissions.
	DefaultTCPUserTimeout = 20 * time.Second
)

// Options say how to connect.
type Options struct {
	// Application is the application_name the server shows in
	// pg_stat_activity, unless the connection string sets one. Defaults to
	// none.
	Application string
	// MinMaxConns raises the pool's MaxConns to at least this. Defaults
	// to pgx's default (4, or the DSN's pool_max_conns).
	MinMaxConns int32
	// ConnectTimeout bounds establishing a connection, unless the
	// connection string sets connect_timeout. Defaults to
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// MaxConns, when above 0, is the pool's size whatever the connection
	// string's pool_max_conns says (the operator shares one small pool
	// per database among its Projections). MinMaxConns then does not
	// apply.
	MaxConns int32
	// MaxConnIdleTime, when above 0, closes connections idle for longer.
	MaxConnIdleTime time.Duration
	// Configure, if set, adjusts the parsed configuration before the pool
	// is made (the operator puts the TLS files it mounted from a Secret in
	// place of those the connection string names). Its error is returned
	// as it is, and must not hold a password.
	Configure func(*pgxpool.Config) error
}

// ErrInvalidDSN is matched (with errors.Is) by every [*DSNError].
var ErrInvalidDSN = errors.New("invalid database connection string")

// ErrNoDatabase is matched by the error of [Require]: nothing names a
// database.
var ErrNoDatabase = errors.New("no database")

// ErrUnreachable is matched by a failure to connect: refused, unknown
// host, authentication failed, or no answer within the connect timeout.
var ErrUnreachable = errors.New("database unreachable")

// ErrNotResponding is matched by an operation the database did not answer
// within its bound (see [NotResponding]).
var ErrNotResponding = errors.New("database not responding")

// DSNError is a connection string that cannot be parsed. Its message says
// what is wrong without quoting the connection string.
type DSNError struct {
	// Problem says what is wrong and how to write it instead.
	Problem string
}

func (e *DSNError) Error() string { return ErrInvalidDSN.Error() + ": " + e.Problem }

// Is makes a DSNError match ErrInvalidDSN.
func (e *DSNError) Is(target error) bool { return target == ErrInvalidDSN }

// dsnProblems maps pgx's parse failures to what the user can do about
// them. Only these fixed texts are shown: pgx's own message quotes the
// connection string, with a best-effort redaction that misses malformed
// passwords.
var dsnProblems = []struct{ pgx, problem string }{
	{"failed to parse as URL", "not a valid URL; percent-encode special characters in the user name and password (a space as %20, @ as %40, : as %3A, / as %2F)"},
	{"failed to parse as keyword/value", "not valid key=value pairs; put a value with spaces or quotes in single quotes, with \\' for a quote and \\\\ for a backslash"},
	{"invalid port", "invalid port: must be a number between 1 and 65535"},
	{"invalid connect_timeout", "invalid connect_timeout: must be a number of seconds"},
	{"could not match", "the numbers of hosts and ports differ"},
	{"failed to read service", "the service file or service cannot be read"},
	{"invalid sslcertmode", "invalid sslcertmode"},
	{"failed to configure TLS", "the TLS settings are invalid (sslmode must be disable, allow, prefer, require, verify-ca or verify-full, and the certificate and key files must be readable)"},
	{"unknown target_session_attrs", "invalid target_session_attrs"},
	{"invalid min_protocol_version", "invalid min_protocol_version"},
	{"invalid max_protocol_version", "invalid max_protocol_version"},
	{"min_protocol_version cannot be greater", "min_protocol_version is above max_protocol_version"},
	{"unknown channel_binding", "invalid channel_binding"},
	{"invalid require_auth", "invalid require_auth"},
	{"is not in ConnStringAllowedKeys", "a key is not allowed"},
	{"pool_", "invalid pool setting (pool_max_conns, pool_min_conns, pool_max_conn_lifetime, ...)"},
}

// ParseConfig parses dsn (a URL, key=value pairs, or "" for the PG*
// variables) into a pool configuration with the bounds of o and TCP
// keepalives applied. Its error is a [*DSNError] that does not quote dsn.
func ParseConfig(dsn string, o Options) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, dsnError(err)
	}
	if o.Application != "" {
		if cfg.ConnConfig.RuntimeParams == nil {
			cfg.ConnConfig.RuntimeParams = map[string]string{}
		}
		if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
			cfg.ConnConfig.RuntimeParams["application_name"] = o.Application
		}
	}
	cfg.MaxConns = max(cfg.MaxConns, o.MinMaxConns)
	// pgx sets ConnectTimeout only from connect_timeout; 0 waits forever.
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = o.ConnectTimeout
		if o.ConnectTimeout <= 0 {
			cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
		}
	}
	d := &net.Dialer{
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: DefaultKeepAliveIdle,
			Interval: DefaultKeepAliveInterval, Count: DefaultKeepAliveCount},
		Control: setTCPUserTimeout(DefaultTCPUserTimeout),
	}
	cfg.ConnConfig.DialFunc = d.DialContext
	return cfg, nil
}

func dsnError(err error) error {
	msg := err.Error()
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) {
		// The message is "cannot parse `<dsn>`: <what> (<cause>)": the
		// part after the DSN is pgx's. Look for a known one after the
		// last backquote, so that nothing of the DSN is matched.
		if i := strings.LastIndexByte(msg, '`'); i >= 0 {
			msg = msg[i:]
		}
	}
	for _, p := range dsnProblems {
		if strings.Contains(msg, p.pgx) {
			return &DSNError{Problem: p.problem}
		}
	}
	return &DSNError{Problem: "cannot be parsed as a URL (postgres://user:password@host:5432/db) or as key=value pairs (host=... user=... dbname=...)"}
}

// pgEnvNames are the PG* variables that name a server for pgx to connect
// to when the connection string is empty.
var pgEnvNames = []string{"PGHOST", "PGHOSTADDR", "PGSERVICE", "PGDATABASE"}

// Require checks that dsn, or else one of the PG* variables getenv
// (usually os.Getenv) reads, names a database: without either, pgx would
// try a local socket as the current user, and a worker would retry that
// forever. Its error matches [ErrNoDatabase] and says how to name one.
func Require(dsn string, getenv func(string) string) error {
	if dsn != "" {
		return nil
	}
	for _, v := range pgEnvNames {
		if getenv(v) != "" {
			return nil
		}
	}
	return fmt.Errorf("%w: set DATABASE_URL or pass --database-url, e.g.\n\n"+
		"  DATABASE_URL='postgres://app@db.example.com:5432/app?sslmode=require'\n\n"+
		"(or the PGHOST, PGUSER, PGPASSWORD, PGDATABASE variables)", ErrNoDatabase)
}

// NewPool parses dsn and makes a pool that connects on first use, as a
// long-running program wants (the operator, the worker): it meets an
// unreachable database when it uses the pool, says so, and tries again.
// Its error is a [*DSNError], or Configure's; neither holds a password.
func NewPool(dsn string, o Options) (*pgxpool.Pool, error) {
	cfg, err := ParseConfig(dsn, o)
	if err != nil {
		return nil, err
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
		cfg.MinConns = min(cfg.MinConns, cfg.MaxConns)
		cfg.MinIdleConns = min(cfg.MinIdleConns, cfg.MaxConns)
	}
	if o.MaxConnIdleTime > 0 {
		cfg.MaxConnIdleTime = o.MaxConnIdleTime
	}
	if o.Configure != nil {
		if err := o.Configure(cfg); err != nil {
			return nil, err
		}
	}
	// NewWithConfig does not connect (MinConns connections come in the
	// background): its only errors are settings it refuses.
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, &DSNError{Problem: NewRedactor(dsn).String(err.Error())}
	}
	return pool, nil
}

// Open is [NewPool] for a program that runs once (every CLI subcommand):
// it also checks that the server answers within o's connect timeout. Its
// errors are a [*DSNError], Configure's, or a [*ConnectError] matching
// [ErrUnreachable] (and [ErrNotResponding] when the server accepted the
// connection but did not answer); none holds a password.
func Open(ctx context.Context, dsn string, o Options) (*pgxpool.Pool, error) {
	pool, err := NewPool(dsn, o)
	if err != nil {
		return nil, err
	}
	cfg := pool.Config()
	if err := Ping(ctx, pool, cfg.ConnConfig.ConnectTimeout); err != nil {
		pool.Close()
		return nil, &ConnectError{Target: Target(cfg), Err: NewRedactor(dsn).Error(err)}
	}
	return pool, nil
}

// Target describes where cfg connects, without its password:
// "user@host:port/database".
func Target(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	return fmt.Sprintf("%s@%s/%s", c.User, net.JoinHostPort(c.Host, fmt.Sprint(c.Port)), c.Database)
}

// ConnectError is a database that could not be reached.
type ConnectError struct {
	// Target is where the connection went, "user@host:port/database".
	Target string
	// Err is why, already redacted.
	Err error
}

// Error reads "connecting to the database: <why>"; pgx's why names the
// user, database and host.
func (e *ConnectError) Error() string { return "connecting to the database: " + e.Err.Error() }

func (e *ConnectError) Unwrap() error { return e.Err }

// Is makes a ConnectError match ErrUnreachable, and ErrNotResponding when
// the server did not answer in time.
func (e *ConnectError) Is(target error) bool {
	return target == ErrUnreachable || (target == ErrNotResponding && NotResponding(e.Err))
}

// Ping checks within timeout that pool's server answers. A server that
// does not answer in time gives an error matching [ErrNotResponding].
func Ping(ctx context.Context, pool *pgxpool.Pool, timeout time.Duration) error {
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := pool.Ping(pctx)
	if err != nil && ctx.Err() == nil && pctx.Err() != nil {
		return &TimeoutError{Op: "ping", Timeout: timeout, Err: err}
	}
	return err
}

// TimeoutError is a database operation that did not complete within its
// bound while its caller was still waiting.
type TimeoutError struct {
	Op      string
	Timeout time.Duration
	Err     error
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("%s: %v: no answer within %s", e.Op, ErrNotResponding, e.Timeout)
}

func (e *TimeoutError) Unwrap() error { return e.Err }

// Is makes a TimeoutError match ErrNotResponding.
func (e *TimeoutError) Is(target error) bool { return target == ErrNotResponding }

// NotResponding reports whether err says the database did not answer in
// time: an ErrNotResponding, a deadline, or a network timeout.
func NotResponding(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrNotResponding) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Unreachable reports whether err says the database could not be reached
// or the connection was lost: a failure to connect (refused, unknown host,
// authentication), a cut connection, a server shutting down. A timeout is
// a net.Error too: ask [NotResponding] first where the two differ.
func Unreachable(err error) bool {
	var ce *pgconn.ConnectError
	var ne net.Error
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, ErrUnreachable), errors.As(err, &ce), errors.As(err, &ne),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	case errors.As(err, &pgErr):
		// Class 08, connection exception; 57P, the server shutting down.
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P")
	}
	return false
}
