package controllers

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/pkg/projection"
)

// databaseTimeout bounds what one reconcile does in a database: connect,
// migrate, switch the topology, read progress.
const databaseTimeout = 10 * time.Second

// databases keeps one small pool per connection string, shared by every
// Projection whose Secret holds it, so that a reconcile does not pay a
// connection setup every time. Pools hold no connection when idle.
type databases struct {
	mu    sync.Mutex
	pools map[[sha256.Size]byte]*database
}

type database struct {
	pool *pgxpool.Pool
	// migrated is set once the event store's schema has been brought up
	// to date through this pool.
	migrated bool
	mu       sync.Mutex
}

// get returns the pool for dsn, migrating the schema the first time.
func (d *databases) get(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	key := sha256.Sum256([]byte(dsn))
	d.mu.Lock()
	if d.pools == nil {
		d.pools = map[[sha256.Size]byte]*database{}
	}
	db, ok := d.pools[key]
	if !ok {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			d.mu.Unlock()
			return nil, &databaseError{condition: v1alpha1.ReasonInvalidDSN, what: "parsing the connection string", err: err, dsn: dsn}
		}
		cfg.MaxConns = 4
		cfg.MinConns = 0
		cfg.MaxConnIdleTime = time.Minute
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
		if cfg.ConnConfig.RuntimeParams == nil {
			cfg.ConnConfig.RuntimeParams = map[string]string{}
		}
		cfg.ConnConfig.RuntimeParams["application_name"] = "projectionist-operator"
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			d.mu.Unlock()
			return nil, &databaseError{condition: v1alpha1.ReasonInvalidDSN, what: "parsing the connection string", err: err, dsn: dsn}
		}
		db = &database{pool: pool}
		d.pools[key] = db
	}
	d.mu.Unlock()

	db.mu.Lock()
	defer db.mu.Unlock()
	if !db.migrated {
		if err := db.pool.Ping(ctx); err != nil {
			return nil, &databaseError{condition: v1alpha1.ReasonDatabaseUnreachable, what: "connecting", err: err, dsn: dsn}
		}
		if _, err := projection.Migrate(ctx, db.pool); err != nil {
			return nil, &databaseError{condition: v1alpha1.ReasonMigrationFailed, what: "migrating the event store's schema", err: err, dsn: dsn}
		}
		db.migrated = true
	}
	return db.pool, nil
}

// close closes every pool.
func (d *databases) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, db := range d.pools {
		db.pool.Close()
		delete(d.pools, k)
	}
}

// databaseError is a failure to use a projection's database. Its message
// never holds the connection string's password.
type databaseError struct {
	condition string // the Degraded condition's reason
	what      string // what was attempted
	err       error
	dsn       string
}

func (e *databaseError) Error() string {
	return redact(fmt.Sprintf("%s: %v", e.what, e.err), e.dsn)
}

func (e *databaseError) Unwrap() error { return e.err }

// redact removes the password of dsn from msg. pgx already masks it in
// its own parse errors; this also covers messages that quote the
// connection string some other way.
func redact(msg, dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil || cfg.Password == "" {
		return msg
	}
	return strings.ReplaceAll(msg, cfg.Password, "xxxxx")
}

// redactErr is redact for an error that may come from any pgx call.
func redactErr(err error, dsn string) string {
	if err == nil {
		return ""
	}
	var dbErr *databaseError
	if errors.As(err, &dbErr) {
		return dbErr.Error()
	}
	return redact(err.Error(), dsn)
}
