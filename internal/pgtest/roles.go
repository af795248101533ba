package pgtest

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// LeastPrivilege is a database on a server of one test's own (roles are
// the server's, not the database's), on which docs/least-privilege.sql has
// run: the roles projectionist_operator, projectionist_worker and
// projectionist_metrics exist with their grants, and [LeastPrivilege.Login]
// makes logins in them.
type LeastPrivilege struct {
	// AdminDSN is the superuser's DSN of the database.
	AdminDSN string
	// Admin is a pool on AdminDSN, closed when the test ends.
	Admin  *pgxpool.Pool
	script string
}

// NewLeastPrivilege starts a server for this test, creates a database on
// it and runs docs/least-privilege.sql there.
func NewLeastPrivilege(tb testing.TB) *LeastPrivilege {
	tb.Helper()
	script, err := readRepoFile("docs/least-privilege.sql")
	if err != nil {
		tb.Fatal(err)
	}
	dsn := NewServer(tb).NewDatabase(tb)
	l := &LeastPrivilege{AdminDSN: dsn, Admin: OpenPool(tb, dsn), script: string(script)}
	l.Grant(tb)
	return l
}

// Grant runs docs/least-privilege.sql again, as an administrator does once a
// migration has created the tables its grants name.
func (l *LeastPrivilege) Grant(tb testing.TB) {
	tb.Helper()
	if _, err := l.Admin.Exec(context.Background(), l.script); err != nil {
		tb.Fatalf("docs/least-privilege.sql: %v", err)
	}
}

// Login creates the role name, which logs in and is a member of memberOf
// (such as "projectionist_operator"), and returns AdminDSN with name as its
// user.
func (l *LeastPrivilege) Login(tb testing.TB, name, memberOf string) string {
	tb.Helper()
	sql := "CREATE ROLE " + name + " LOGIN IN ROLE " + memberOf
	if _, err := l.Admin.Exec(context.Background(), sql); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	u, err := url.Parse(l.AdminDSN)
	if err != nil {
		tb.Fatal(err)
	}
	u.User = url.User(name)
	return u.String()
}

// OpenPool opens a pool on dsn, closed when the test ends.
func OpenPool(tb testing.TB, dsn string) *pgxpool.Pool {
	tb.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// readRepoFile reads path, relative to the module's root: the nearest
// folder above the working directory (a test's package folder) that holds
// go.mod.
func readRepoFile(path string) ([]byte, error) {
	dir, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return os.ReadFile(filepath.Join(dir, path))
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil, errors.New("no go.mod above the working directory: cannot find " + path)
		}
		dir = parent
	}
}
