// Command projectionist is the one binary of projectionist: it migrates the
// event store's schema, runs a projection worker, generates demo events,
// and reports its version.
//
//	projectionist migrate
//	projectionist worker
//	projectionist events generate --count 100000 --rate 5000
//	projectionist dead-letters list --projection revenue
//	projectionist import --source-url postgres://old-db/app --source-table events
//	projectionist operator --leader-elect
//	projectionist version
//
// Every command has -h/--help with examples. Exit codes: 0 success, 1 a
// failure at run time (the database refused, an event failed), 2 bad usage
// (an unknown command, a bad flag, no database configured).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/dbconn"
	"github.com/projectionist/projectionist/pkg/projection"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // the first signal stops gracefully; a second one kills
	}()
	code := (&cli{ctx: ctx, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}).run(os.Args[1:])
	stop()
	os.Exit(code)
}

// cli is one invocation: where it writes, and what it reads the
// environment with.
type cli struct {
	ctx            context.Context
	stdout, stderr io.Writer
	getenv         func(string) string
	// redact removes the password of the connection string in use from
	// whatever the command reports; set by databaseURL.
	redact *dbconn.Redactor
}

// command is a subcommand.
type command struct {
	name    string // as typed: "events generate"
	summary string
	run     func(c *cli, args []string) int
}

// commands lists the subcommands in the order help shows them.
var commands = []command{
	{"migrate", "bring the event store's schema up to date", (*cli).migrate},
	{"worker", "run the demo projections: one partition of each, until stopped", (*cli).runWorker},
	{"events generate", "append demo events (users, orders) to the log", (*cli).eventsGenerate},
	{"dead-letters list", "list a projection's dead letters", (*cli).deadLettersList},
	{"dead-letters show", "show one dead letter in full", (*cli).deadLettersShow},
	{"dead-letters retry", "hand dead letters back to their partition's worker", (*cli).deadLettersRetry},
	{"dead-letters discard", "delete dead letters without applying them", (*cli).deadLettersDiscard},
	{"import", "copy an existing event log (the guide's events table) into the event store", (*cli).importEvents},
	{"forget", "delete every row kept for a projection that is gone for good", (*cli).forget},
	{"partition-indexes list", "list the partition indexes that let each partition read only its own rows", (*cli).partitionIndexesList},
	{"partition-indexes create", "build the partition index for a partition count", (*cli).partitionIndexesCreate},
	{"partition-indexes drop", "drop the partition index for a partition count", (*cli).partitionIndexesDrop},
	{"operator", "run the Kubernetes operator that reconciles Projection resources", (*cli).operator},
	{"version", "print the version", (*cli).version},
}

const topUsage = `Usage: projectionist <command> [flags]

projectionist runs partitioned, checkpointed event-sourcing projections on
PostgreSQL.

Commands:
%s
Run 'projectionist <command> --help' for a command's flags and examples.

Examples:
  export DATABASE_URL='postgres://postgres:secret@localhost:5432/app?sslmode=disable'
  projectionist migrate
  projectionist events generate --count 10000
  PARTITION_KEY=0 TOTAL_PARTITIONS=2 projectionist worker
`

func (c *cli) topUsage(w io.Writer) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 3, ' ', 0)
	for _, cmd := range commands {
		fmt.Fprintf(tw, "  %s\t%s\n", cmd.name, cmd.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, topUsage, b.String())
}

// run dispatches args (without the program name) and returns the exit code.
func (c *cli) run(args []string) int {
	if len(args) == 0 {
		c.topUsage(c.stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && args[0] == "help" {
			// "help migrate" is "migrate --help".
			return c.run(append(args[1:], "--help"))
		}
		c.topUsage(c.stdout)
		return exitOK
	case "-version", "--version":
		return c.version(args[1:])
	}
	// The longest command whose words start args wins: "events generate".
	for _, cmd := range commands {
		words := strings.Fields(cmd.name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == cmd.name {
			return cmd.run(c, args[len(words):])
		}
	}
	// A command group typed alone or with --help ("events") lists its
	// commands.
	var group []command
	for _, cmd := range commands {
		if first, _, ok := strings.Cut(cmd.name, " "); ok && first == args[0] {
			group = append(group, cmd)
		}
	}
	if len(group) > 0 {
		w, code := c.stderr, exitUsage
		switch {
		case len(args) == 1:
			fmt.Fprintf(w, "projectionist %s: missing command\n\n", args[0])
		case isHelp(args[1]):
			w, code = c.stdout, exitOK
		default:
			fmt.Fprintf(w, "projectionist %s: unknown command %q\n\n", args[0], args[1])
		}
		fmt.Fprintf(w, "Usage: projectionist %s <command> [flags]\n\nCommands:\n", args[0])
		tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
		for _, cmd := range group {
			fmt.Fprintf(tw, "  %s\t%s\n", cmd.name, cmd.summary)
		}
		tw.Flush()
		fmt.Fprintf(w, "\nRun 'projectionist %s --help' for its flags and examples.\n", group[0].name)
		return code
	}
	fmt.Fprintf(c.stderr, "projectionist: unknown command %q\nRun 'projectionist --help' for the list of commands.\n", args[0])
	return exitUsage
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

// usageError is bad input: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// fail reports err for the command and returns its exit code: 2 for a
// usage error, 1 otherwise. Passwords in connection strings are masked,
// whatever the error echoes.
func (c *cli) fail(name string, err error) int {
	msg := c.redact.String(err.Error())
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(c.stderr, "projectionist %s: %s\nRun 'projectionist %s --help' for usage.\n", name, msg, name)
		return exitUsage
	}
	fmt.Fprintf(c.stderr, "projectionist %s: %s\n", name, msg)
	return exitFailure
}

// commandHelp is what a command's --help prints around its flags.
type commandHelp struct {
	name, args  string // "migrate", "[flags]"
	description string
	examples    string
}

// flags is a command's flag set, with help in the house format.
type flags struct {
	*flag.FlagSet
	help commandHelp
}

func newFlags(help commandHelp) *flags {
	fs := flag.NewFlagSet(help.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse errors are reported by parse
	return &flags{FlagSet: fs, help: help}
}

// usage writes the command's help: usage line, description, flags,
// examples.
func (f *flags) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", strings.TrimSpace("projectionist "+f.help.name+" "+f.help.args), strings.TrimSpace(f.help.description))
	var names []string
	f.VisitAll(func(fl *flag.Flag) { names = append(names, fl.Name) })
	if len(names) > 0 {
		sort.Strings(names)
		fmt.Fprint(w, "\nFlags:\n")
		tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
		for _, n := range names {
			fl := f.Lookup(n)
			typ, usage := flag.UnquoteUsage(fl)
			if typ != "" {
				typ = " " + typ
			}
			def := ""
			if fl.DefValue != "" && fl.DefValue != "0" && fl.DefValue != "false" {
				def = fmt.Sprintf(" (default %s)", fl.DefValue)
			}
			fmt.Fprintf(tw, "  --%s%s\t%s%s\n", n, typ, usage, def)
		}
		tw.Flush()
	}
	if f.help.examples != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(f.help.examples, "\n"))
	}
}

// parse parses args. done is true when the command must return code at
// once: after --help (0) or a bad flag or argument (2).
func (c *cli) parse(f *flags, args []string) (done bool, code int) {
	err := f.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		f.usage(c.stdout)
		return true, exitOK
	case err != nil:
		return true, c.fail(f.help.name, usagef("%v", err))
	case f.NArg() > 0:
		return true, c.fail(f.help.name, usagef("unexpected argument %q", f.Arg(0)))
	}
	return false, exitOK
}

// databaseURLFlag adds --database-url to f.
func databaseURLFlag(f *flags) *string {
	return f.String("database-url", "", "PostgreSQL connection string, as a URL or key=value pairs (default $DATABASE_URL)")
}

// connString is a connection string and where it came from: the flag or
// variable that held it ("--database-url", "DATABASE_URL",
// "--source-url"), or the PG* variables when it is empty. A malformed one
// is reported under that name, as the worker does.
type connString struct {
	dsn, source string
}

// pgVariables is the source of an empty connection string: pgx reads
// PGHOST, PGPORT, ... instead.
const pgVariables = "the PG* variables"

// databaseURL returns the connection string to use: --database-url, else
// $DATABASE_URL, else "" if the PG* variables name a server.
func (c *cli) databaseURL(flagValue string) (connString, error) {
	c.redact = dbconn.NewRedactor(flagValue, c.getenv("DATABASE_URL"), "password="+c.getenv("PGPASSWORD"))
	if flagValue != "" {
		return connString{flagValue, "--database-url"}, nil
	}
	dsn := c.getenv("DATABASE_URL")
	if err := dbconn.Require(dsn, c.getenv); err != nil {
		return connString{}, &usageError{err.Error()}
	}
	if dsn == "" {
		return connString{"", pgVariables}, nil // pgx reads the PG* variables
	}
	return connString{dsn, "DATABASE_URL"}, nil
}

// connect opens a pool on cs with at least minConns connections and checks
// that the server answers, within the connect timeout (connect_timeout,
// else 10s). A malformed connection string is a usage error that names
// where it came from and does not quote it.
func (c *cli) connect(cs connString, application string, minConns int32) (*pgxpool.Pool, error) {
	pool, err := dbconn.Open(c.ctx, cs.dsn, dbconn.Options{Application: application, MinMaxConns: minConns})
	if errors.Is(err, dbconn.ErrInvalidDSN) {
		return nil, &usageError{cs.source + ": " + err.Error()}
	}
	return pool, err
}

// withSchemaHint adds advice to an error that says the event store's
// tables are missing.
func withSchemaHint(err error) error {
	var pgErr *pgconn.PgError
	if errors.Is(err, projection.ErrNoSchema) {
		return err // the library's error says it already
	}
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return fmt.Errorf("%w\nThe event store's schema is missing: run 'projectionist migrate' first", err)
	}
	return err
}
