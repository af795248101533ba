package controllers

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/internal/dbconn"
	"github.com/projectionist/projectionist/pkg/projection"
)

// Bounds on what one reconcile waits for in a database. A database that
// does not answer within them is checked with a ping of pingTimeout; if
// that fails too, it is marked not responding: reconciles of its
// Projections report DatabaseNotResponding at once, without waiting, and
// one prober per database pings it every probeInterval until it answers.
// So a hung database costs the reconcile workers (shared by every
// Projection) one bounded wait, not one per reconcile.
const (
	// databaseTimeout bounds connecting, migrating and each read.
	databaseTimeout = 5 * time.Second
	// topologyTimeout bounds a topology switch, which waits for the
	// workers' batches in flight (each within its own BatchTimeout).
	topologyTimeout = 30 * time.Second
	pingTimeout     = 2 * time.Second
	// poolMaxConns is the size of the one pool per database that all the
	// Projections on it share; a partition index build holds one.
	poolMaxConns  = 4
	probeInterval = time.Second
)

// databases keeps one small pool per connection string, shared by every
// Projection whose Secret holds it, so that a reconcile does not pay a
// connection setup every time. Pools hold no connection when idle.
type databases struct {
	mu    sync.Mutex
	pools map[[sha256.Size]byte]*database
	// stop ends the probers; set on first use.
	ctx  context.Context
	stop context.CancelFunc
}

type database struct {
	pool   *pgxpool.Pool
	redact *dbconn.Redactor
	// migrated is set once the event store's schema has been brought up
	// to date through this pool.
	migrated bool
	mu       sync.Mutex

	// hung, while not nil, is why the database is marked not
	// responding, and since when; a prober runs meanwhile.
	hungMu    sync.Mutex
	hung      error
	hungSince time.Time
}

// get returns the database of dsn, migrating the schema the first time.
// files, where set, stand in for the files dsn's TLS parameters named (see
// mountedTLSFiles).
func (d *databases) get(ctx context.Context, dsn string, files mountedTLS) (*database, error) {
	h := sha256.New()
	for _, b := range [][]byte{[]byte(dsn), files.rootCA, files.cert, files.key} {
		h.Write(b)
		h.Write([]byte{0})
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	d.mu.Lock()
	if d.pools == nil {
		d.pools = map[[sha256.Size]byte]*database{}
		d.ctx, d.stop = context.WithCancel(context.Background())
	}
	db, ok := d.pools[key]
	if !ok {
		var tlsErr error
		pool, err := dbconn.NewPool(dsn, dbconn.Options{Application: "projectionist-operator", ConnectTimeout: databaseTimeout,
			MaxConns: poolMaxConns, MaxConnIdleTime: time.Minute,
			Configure: func(cfg *pgxpool.Config) error {
				tlsErr = useMountedTLS(cfg, files)
				return tlsErr
			}})
		if err != nil {
			d.mu.Unlock()
			what := "parsing the connection string"
			if tlsErr != nil {
				what = "using the mounted TLS files"
			}
			return nil, &databaseError{condition: v1alpha1.ReasonInvalidDSN, what: what, err: err}
		}
		db = &database{pool: pool, redact: dbconn.NewRedactor(dsn)}
		d.pools[key] = db
	}
	d.mu.Unlock()

	if err := db.hungErr(); err != nil {
		return db, err
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if !db.migrated {
		err := d.do(ctx, db, "connecting to the database", databaseTimeout, func(ctx context.Context) error { return db.pool.Ping(ctx) })
		if err != nil {
			return db, err
		}
		err = d.do(ctx, db, "migrating the event store's schema", databaseTimeout, func(ctx context.Context) error {
			_, err := projection.Migrate(ctx, db.pool)
			return err
		})
		if err != nil {
			return db, err
		}
		db.migrated = true
	}
	return db, nil
}

// do runs fn within timeout. Its error is a *databaseError without the
// password: DatabaseNotResponding when fn ran out of time and a ping
// failed too (the database is then marked as such, and probed);
// DatabaseSlow when fn ran out of time but a ping answers (a migration or
// a topology switch keeps its own reason); DatabaseUnreachable for a
// connection failure; else what's reason.
func (d *databases) do(ctx context.Context, db *database, what string, timeout time.Duration, fn func(context.Context) error) error {
	if err := db.hungErr(); err != nil {
		return err
	}
	fctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := fn(fctx)
	if err == nil {
		return nil
	}
	if ctx.Err() == nil && fctx.Err() != nil {
		if perr := dbconn.Ping(ctx, db.pool, pingTimeout); perr != nil && ctx.Err() == nil {
			return d.markHung(db, what, timeout, err)
		}
		// It answers: the database is reachable, and what was slow (a
		// lock it waits for, a query on a large log).
		return &databaseError{condition: slowReasonFor(what), what: what,
			err: db.redact.Error(fmt.Errorf("no result within %s, while the database answers a ping: %w", timeout, err))}
	}
	if dbconn.Unreachable(err) {
		return &databaseError{condition: v1alpha1.ReasonDatabaseUnreachable, what: what, err: db.redact.Error(err)}
	}
	return &databaseError{condition: reasonFor(what), what: what, err: db.redact.Error(err)}
}

// reasonFor is the Degraded reason of a failure to do what.
func reasonFor(what string) string {
	switch what {
	case "migrating the event store's schema":
		return v1alpha1.ReasonMigrationFailed
	case "switching the topology":
		return v1alpha1.ReasonTopologyFailed
	}
	return v1alpha1.ReasonDatabaseUnreachable
}

// slowReasonFor is the reason of doing what taking longer than its bound
// on a database that answers a ping.
func slowReasonFor(what string) string {
	if r := reasonFor(what); r != v1alpha1.ReasonDatabaseUnreachable {
		return r
	}
	return v1alpha1.ReasonDatabaseSlow
}

// slow reports whether err is a read that ran out of time on a database
// that answers (DatabaseSlow).
func slow(err error) bool { return reasonOf(err) == v1alpha1.ReasonDatabaseSlow }

// markHung marks db as not responding and starts its prober.
func (d *databases) markHung(db *database, what string, timeout time.Duration, err error) error {
	db.hungMu.Lock()
	defer db.hungMu.Unlock()
	if db.hung == nil {
		db.hung = &dbconn.TimeoutError{Op: what, Timeout: timeout, Err: err}
		db.hungSince = time.Now()
		go d.probe(db)
	}
	return db.hungErrLocked()
}

// probe pings db until it answers, then clears its mark.
func (d *databases) probe(db *database) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		if dbconn.Ping(d.ctx, db.pool, pingTimeout) == nil {
			db.hungMu.Lock()
			db.hung = nil
			db.hungMu.Unlock()
			return
		}
	}
}

// hungErr is the error of every use of db while it is marked not
// responding, nil otherwise.
func (db *database) hungErr() error {
	db.hungMu.Lock()
	defer db.hungMu.Unlock()
	return db.hungErrLocked()
}

func (db *database) hungErrLocked() error {
	if db.hung == nil {
		return nil
	}
	return &databaseError{condition: v1alpha1.ReasonDatabaseNotResponding,
		what: fmt.Sprintf("not responding since %s", db.hungSince.UTC().Format(time.RFC3339)), err: db.redact.Error(db.hung)}
}

// close closes every pool and stops the probers.
func (d *databases) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stop != nil {
		d.stop()
	}
	for k, db := range d.pools {
		db.pool.Close()
		delete(d.pools, k)
	}
}

// databaseError is a failure to use a projection's database. Its message
// never holds the connection string's password: err is redacted when the
// error is made.
type databaseError struct {
	condition string // the Degraded condition's reason
	what      string // what was attempted
	err       error
}

func (e *databaseError) Error() string { return fmt.Sprintf("%s: %v", e.what, e.err) }

func (e *databaseError) Unwrap() error { return e.err }

// redact removes the password of dsn from msg, whether dsn parses or not.
func redact(msg, dsn string) string { return dbconn.NewRedactor(dsn).String(msg) }

// redactErr is redact for an error that may come from any pgx call.
func redactErr(err error, dsn string) string {
	if err == nil {
		return ""
	}
	return redact(err.Error(), dsn)
}

// useMountedTLS makes every TLS attempt of cfg (the host and its
// fallbacks) verify the server against files.rootCA and present the client
// certificate files.cert and files.key, where set. pgx's verify-ca check
// reads the config's RootCAs when it runs, and verify-full is Go's own
// verification, so both use them.
func useMountedTLS(cfg *pgxpool.Config, files mountedTLS) error {
	var roots *x509.CertPool
	if files.rootCA != nil {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(files.rootCA) {
			return errors.New("sslrootcert: no PEM certificate in it")
		}
	}
	var certs []tls.Certificate
	switch {
	case files.cert != nil && files.key != nil:
		c, err := tls.X509KeyPair(files.cert, files.key)
		if err != nil {
			return fmt.Errorf("sslcert and sslkey: %w", err)
		}
		certs = []tls.Certificate{c}
	case files.cert != nil || files.key != nil:
		return errors.New("sslcert and sslkey must both name files in the Projection's ConfigMap or Secret volumes, or neither")
	}
	tlsConfigs := []*tls.Config{cfg.ConnConfig.TLSConfig}
	for _, f := range cfg.ConnConfig.Fallbacks {
		tlsConfigs = append(tlsConfigs, f.TLSConfig)
	}
	for _, t := range tlsConfigs {
		if t == nil {
			continue
		}
		if roots != nil {
			t.RootCAs = roots
		}
		if certs != nil {
			t.Certificates = certs
		}
	}
	return nil
}

func reasonOf(err error) string {
	var dbErr *databaseError
	if errors.As(err, &dbErr) {
		return dbErr.condition
	}
	return v1alpha1.ReasonDatabaseUnreachable
}
