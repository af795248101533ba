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

	"github.com/projectionist/projectionist/pkg/projection"
)

// Main is a worker program: it reads the configuration from os.Args and
// the environment (see [ParseConfig]; -h lists the flags), logs with slog
// to standard error, runs the projections until SIGTERM or SIGINT (a
// second signal kills at once), and exits with status 0 after a graceful
// shutdown, 1 when the worker failed (a poison event under the stop
// policy, a shutdown that overran SHUTDOWN_TIMEOUT), or 2 for a bad
// configuration. It does not return.
func Main(projections ...projection.Projection) {
	os.Exit(exitCode(os.Args[1:], os.Getenv, os.Stderr, projections))
}

// exitCode is Main without the exit.
func exitCode(args []string, getenv func(string) string, stderr io.Writer, projections []projection.Projection) int {
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
	log := cfg.newLogger(stderr)
	cfg.Logger = log
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // restore the default: a second signal kills
	}()
	err = Run(ctx, cfg, projections...)
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
	opts := &slog.HandlerOptions{Level: c.LogLevel, ReplaceAttr: redactAttr(redactor(c.DatabaseURL))}
	if c.LogFormat == LogFormatText {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
