package worker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/projectionist/projectionist/pkg/projection"
)

// Main is a worker program around projections: Program{Projections:
// projections}.Main(). It does not return.
func Main(projections ...projection.Projection) {
	Program{Projections: projections}.Main()
}

// Program is a worker program with the options a real one needs beside its
// projections. The zero value of every field but Projections means "none"
// or "the default":
//
//	func main() {
//		worker.Program{
//			Projections: []projection.Projection{Orders{}, Customers{}},
//			Setup:       createTables,
//			Version:     version,
//		}.Main()
//	}
//
// The operator starts any Program's image exactly as it starts the stock
// projectionist image (see [Args] and the Env* names).
type Program struct {
	// Projections are the projections the program can run; PROJECTION
	// selects among them by name. At least one is required.
	Projections []projection.Projection
	// Setup, if set, runs once after the schema migration and before the
	// projections start, typically to create the read-model tables with
	// CREATE TABLE IF NOT EXISTS; while it fails it is retried with backoff
	// like a lost database. See [Config.Setup].
	Setup func(ctx context.Context, db projection.DBTX) error
	// Logger, if set, receives the worker's logs instead of the default
	// JSON (or LOG_FORMAT) logger on standard error; LOG_LEVEL and
	// LOG_FORMAT then do not apply. Errors reach it with passwords masked.
	Logger *slog.Logger
	// Collectors are extra Prometheus collectors served on /metrics beside
	// the worker's own, e.g. counters of the program's own domain.
	Collectors []prometheus.Collector
	// Version is the program's version, as logged at start and exported as
	// projectionist_build_info{version=...}. Defaults to the main module's
	// version from the build information, or "(devel)".
	Version string
}

// Main reads the configuration from os.Args and the environment (see
// [ParseConfig]; -h lists the flags), runs the projections until SIGTERM or
// SIGINT (a second signal kills at once), and exits with status 0 after a
// graceful shutdown, 1 when the worker failed (a poison event under the
// stop policy, a shutdown that overran SHUTDOWN_TIMEOUT), or 2 for a bad
// configuration. It does not return.
func (p Program) Main() {
	os.Exit(p.exitCode(os.Args[1:], os.Getenv, os.Stderr))
}

// exitCode is Main without the exit.
func (p Program) exitCode(args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := ParseConfig(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stderr, "Usage: %s [flags]\n\nRuns projections: see package github.com/projectionist/projectionist/worker.\n\n", filepath.Base(os.Args[0]))
		Usage(stderr)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%v (run with -h for the flags and variables)\n", err)
		return 2
	}
	log := p.Logger
	if log == nil {
		log = cfg.newLogger(stderr)
	}
	cfg.Logger = log
	cfg.Setup, cfg.Collectors, cfg.Version = p.Setup, p.Collectors, p.Version
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // restore the default: a second signal kills
	}()
	err = Run(ctx, cfg, p.Projections...)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrInvalidConfig), errors.Is(err, projection.ErrInvalidConfig):
		log.Error("invalid worker configuration", errAttr(err))
		return 2
	}
	log.Error("worker failed", errAttr(err))
	return 1
}

// newLogger returns the default Logger: LogFormat at LogLevel on w, with
// passwords masked.
func (c Config) newLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel, ReplaceAttr: redactor(c.DatabaseURL).ReplaceAttr}
	if c.LogFormat == LogFormatText {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
