// Package pgtest gives tests a real PostgreSQL server and an isolated database
// per test.
//
// The first call to [NewDatabase] in a test binary starts a throwaway
// PostgreSQL 15 cluster (initdb into a temporary directory, a free loopback
// port, fsync off) unless PROJECTIONIST_TEST_DATABASE_URL names a server to use
// instead. Every test then gets a database of its own, created empty and
// dropped when the test ends. Call [Main] from TestMain so the server stops
// when the binary exits. [Restart] restarts the server, for tests of how
// clients ride out a database restart. [StartTLS] starts a separate server
// that takes only TLS connections, with a certificate from a [CA] made for
// the test, for tests of clients' sslmode.
//
// When the process runs as root, initdb and postgres run as the "postgres"
// user, because PostgreSQL refuses to run as root.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/proctest"
)

// EnvDatabaseURL names an existing server (a DSN whose user may create
// databases) to use instead of starting one.
const EnvDatabaseURL = "PROJECTIONIST_TEST_DATABASE_URL"

// EnvPostgresBin overrides the directory holding initdb and postgres.
const EnvPostgresBin = "PROJECTIONIST_POSTGRES_BIN"

var (
	once     sync.Once
	srv      *server
	startErr error
	dbSeq    atomic.Int64
)

type server struct {
	adminURL string // a DSN for the "postgres" maintenance database
	cmd      *exec.Cmd
	dir      string
	// How cmd was started, for Restart: the postgres binary's directory,
	// the port, the user it runs as (nil: this process's), and settings
	// beyond the common ones (-c name=value).
	bin      string
	port     int
	cred     *syscall.Credential
	settings []string
}

// Main runs the tests and stops the server if one was started. Use it as
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop stops the server started by this process, if any, and removes its
// data directory.
func Stop() {
	dropMustDatabases()
	if srv == nil || srv.dir == "" {
		return // none, or not ours
	}
	srv.stop()
}

// stop stops s's postgres, if it runs, and removes its directory.
func (s *server) stop() {
	if s.cmd != nil { // nil if a Restart failed to start it again
		s.shutdown(10 * time.Second)
	}
	_ = os.RemoveAll(s.dir)
}

// shutdown stops s's running postgres with PostgreSQL's "fast shutdown"
// (SIGINT: roll back and exit promptly), killing it if it has not exited
// within timeout (an immediate stop: recovery on the next start).
func (s *server) shutdown(timeout time.Duration) {
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// ServerURL returns the DSN of the server's maintenance database, starting
// the server if needed.
func ServerURL(tb testing.TB) string {
	tb.Helper()
	once.Do(func() { srv, startErr = start() })
	if startErr != nil {
		tb.Fatalf("starting test PostgreSQL: %v", startErr)
	}
	return srv.adminURL
}

// NewDatabase creates an empty database for this test and returns its DSN.
// The database is dropped when the test ends.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	admin := ServerURL(tb)
	dsn, name, err := createDatabase(admin)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := dropDatabase(admin, name); err != nil {
			tb.Log(err)
		}
	})
	return dsn
}

func createDatabase(admin string) (dsn, name string, err error) {
	name = fmt.Sprintf("t_%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", "", fmt.Errorf("connecting to test PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0"); err != nil {
		return "", "", fmt.Errorf("creating test database %s: %w", name, err)
	}
	return withDatabase(admin, name), name, nil
}

func dropDatabase(admin, name string) error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("dropping test database %s: %w", name, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("dropping test database %s: %w", name, err)
	}
	return nil
}

// NewPool creates a database for this test and returns a pool connected to
// it, closed when the test ends.
func NewPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	pool, err := pgxpool.New(context.Background(), NewDatabase(tb))
	if err != nil {
		tb.Fatalf("opening pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func withDatabase(dsn, name string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		// keyword/value form
		return dsn + " dbname=" + name
	}
	u.Path = "/" + name
	return u.String()
}

// WithSearchPath returns dsn with search_path set to schema, which pgx
// sends as a startup parameter: the sessions of a pool on it resolve
// unqualified names, and create tables, in schema.
func WithSearchPath(dsn, schema string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return dsn + " search_path=" + schema
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func start() (*server, error) {
	if dsn := os.Getenv(EnvDatabaseURL); dsn != "" {
		return &server{adminURL: dsn}, nil
	}
	return startServer()
}

// startServer initdbs and starts a server of this process's own.
func startServer() (*server, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "projectionist-pg-")
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("chown %s to postgres: %w", dir, err)
		}
	}
	if err := initdb(bin, cred, filepath.Join(dir, "data"), "-A", "trust"); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &server{adminURL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port),
		dir: dir, bin: bin, port: port, cred: cred}
	if err := s.launch(); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// initdb creates a cluster in data, its superuser named postgres, with
// args added.
func initdb(bin string, cred *syscall.Credential, data string, args ...string) error {
	cmd := exec.Command(filepath.Join(bin, "initdb"), append([]string{"-D", data, "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	return nil
}

// Server is a PostgreSQL server of one test's own, apart from the one
// [NewDatabase] shares between the tests of a binary: for tests that
// freeze it, which would stall every other test's database.
type Server struct{ s *server }

// NewServer starts a server for this test (always one of this process's
// own, even with PROJECTIONIST_TEST_DATABASE_URL set), stopped and removed
// when the test ends.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s, err := startServer()
	if err != nil {
		tb.Fatalf("starting a test PostgreSQL server: %v", err)
	}
	srv := &Server{s: s}
	tb.Cleanup(func() {
		_ = srv.signal(syscall.SIGCONT) // a frozen server cannot shut down
		s.stop()
	})
	return srv
}

// NewDatabase creates an empty database on the server and returns its
// DSN.
func (s *Server) NewDatabase(tb testing.TB) string {
	tb.Helper()
	dsn, _, err := createDatabase(s.s.adminURL)
	if err != nil {
		tb.Fatal(err)
	}
	return dsn
}

// Freeze stops the server's postmaster and every backend with SIGSTOP:
// connections are accepted by the kernel and then nothing answers, as with
// a hung or overloaded server or a network blackhole. (Stopping the
// postmaster alone leaves its backends answering their sessions.)
func (s *Server) Freeze(tb testing.TB) {
	tb.Helper()
	if err := s.signal(syscall.SIGSTOP); err != nil {
		tb.Fatalf("freezing PostgreSQL: %v", err)
	}
}

// Thaw resumes a frozen server with SIGCONT.
func (s *Server) Thaw(tb testing.TB) {
	tb.Helper()
	if err := s.signal(syscall.SIGCONT); err != nil {
		tb.Fatalf("thawing PostgreSQL: %v", err)
	}
}

// signal sends sig to the postmaster, then to each of its children (every
// backend calls setsid, so they share no process group with it). Stopped
// first, the postmaster forks no child the loop would miss.
func (s *Server) signal(sig syscall.Signal) error {
	if s.s.cmd == nil {
		return errors.New("the server is not running")
	}
	pid := s.s.cmd.Process.Pid
	if err := syscall.Kill(pid, sig); err != nil {
		return err
	}
	children, err := childPIDs(pid)
	if err != nil {
		return err
	}
	for _, c := range children {
		_ = syscall.Kill(c, sig) // it may have exited since
	}
	return nil
}

// childPIDs lists the processes whose parent is pid, from /proc.
func childPIDs(pid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parens.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out, nil
}

// launch starts postgres on s's data directory and port, appending to its
// log, and waits up to 30s for it to accept connections. On failure, s.cmd
// is the process if one was started.
func (s *server) launch() error {
	logf, err := os.OpenFile(filepath.Join(s.dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := []string{
		"-D", filepath.Join(s.dir, "data"),
		"-p", strconv.Itoa(s.port),
		"-k", s.dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=300",
		"-c", "shared_buffers=256MB",
	}
	for _, kv := range s.settings { // the last of a name wins
		args = append(args, "-c", kv)
	}
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a test's Ctrl-C must not kill the server before
	// Stop can shut it down cleanly, and a killed test binary must not
	// leave it orphaned for long (Pdeathsig).
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true, Pdeathsig: syscall.SIGINT}
	err = cmd.Start()
	_ = logf.Close() // the child has its own descriptor
	if err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := pgx.Connect(context.Background(), s.adminURL)
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
			return fmt.Errorf("postgres did not accept connections within 30s: %w\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Restart stops the PostgreSQL server this process started, calls
// whileDown (if not nil) while it is down, and starts it again on the same
// port and data directory, returning once it accepts connections. The
// stop is PostgreSQL's fast shutdown (SIGINT to the postmaster): every
// session is disconnected and transactions in flight roll back, as in
// `pg_ctl stop -m fast`. The databases survive: this is for tests of how
// clients ride out a database restart.
//
// Every test's database goes down with the server, so no other test may
// use it meanwhile: do not call Restart from a parallel test. It fails tb
// when the server was not started by this process (with
// PROJECTIONIST_TEST_DATABASE_URL set, there is nothing to restart).
func Restart(tb testing.TB, whileDown func()) {
	tb.Helper()
	ServerURL(tb) // start the server if need be
	switch {
	case srv.dir == "":
		tb.Fatalf("pgtest.Restart: the server was not started by this process (%s is set): cannot restart it", EnvDatabaseURL)
	case srv.cmd == nil:
		tb.Fatal("pgtest.Restart: the server is down: an earlier Restart failed to start it again")
	}
	srv.shutdown(30 * time.Second)
	if whileDown != nil {
		whileDown()
	}
	if err := srv.launch(); err != nil {
		tb.Fatalf("pgtest.Restart: %v", err)
	}
}

func findBin() (string, error) {
	candidates := []string{os.Getenv(EnvPostgresBin)}
	if p, err := exec.LookPath("pg_config"); err == nil {
		if out, err := exec.Command(p, "--bindir").Output(); err == nil {
			candidates = append(candidates, strings.TrimSpace(string(out)))
		}
	}
	for _, v := range []string{"17", "16", "15"} {
		candidates = append(candidates, "/usr/lib/postgresql/"+v+"/bin")
	}
	for _, dir := range candidates {
		if dir == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries found (install the postgresql-15 package, set " +
		EnvPostgresBin + " to the directory holding initdb, or set " + EnvDatabaseURL + ")")
}

// credential returns the postgres user's credential when running as root,
// and nil otherwise.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a \"postgres\" user to run the server: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) { return proctest.FreePort() }

// mustDatabases lists the databases MustDatabase created, for Stop to drop
// when the server is not ours (a server we started is removed whole).
var (
	mustMu        sync.Mutex
	mustDatabases []string
)

// MustDatabase is [NewDatabase] for code that has no testing.TB, such as
// Example functions: it creates an empty database, starting the server if
// needed, and returns its DSN. It panics on failure. The database lives
// until [Stop] (which [Main] calls): a server started by this process is
// removed whole, and on a server named by PROJECTIONIST_TEST_DATABASE_URL
// the database is dropped.
func MustDatabase() string {
	once.Do(func() { srv, startErr = start() })
	if startErr != nil {
		panic(fmt.Sprintf("pgtest: starting test PostgreSQL: %v", startErr))
	}
	dsn, name, err := createDatabase(srv.adminURL)
	if err != nil {
		panic("pgtest: " + err.Error())
	}
	if srv.cmd == nil {
		mustMu.Lock()
		mustDatabases = append(mustDatabases, name)
		mustMu.Unlock()
	}
	return dsn
}

// MustPool is [NewPool] for code that has no testing.TB: it opens a pool on
// a new database from [MustDatabase] and panics on failure. The caller
// closes the pool.
func MustPool() *pgxpool.Pool {
	pool, err := pgxpool.New(context.Background(), MustDatabase())
	if err != nil {
		panic(fmt.Sprintf("pgtest: opening pool: %v", err))
	}
	return pool
}

// dropMustDatabases drops the databases MustDatabase created on a server
// this process did not start, best effort.
func dropMustDatabases() {
	mustMu.Lock()
	names := mustDatabases
	mustDatabases = nil
	mustMu.Unlock()
	if len(names) == 0 || srv == nil {
		return
	}
	for _, name := range names {
		if err := dropDatabase(srv.adminURL, name); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
		}
	}
}
