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
}

// ErrInvalidDSN is matched (with errors.Is) by every [*DSNError].
var ErrInvalidDSN = errors.New("invalid database connection string")

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

// Open parses dsn, opens a pool and checks that the server answers within
// o's connect timeout. Its errors are a [*DSNError], or a [*ConnectError]
// matching [ErrUnreachable] (and [ErrNotResponding] when the server
// accepted the connection but did not answer); neither holds a password.
func Open(ctx context.Context, dsn string, o Options) (*pgxpool.Pool, error) {
	cfg, err := ParseConfig(dsn, o)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, &ConnectError{Target: Target(cfg), Err: NewRedactor(dsn).Error(err)}
	}
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
