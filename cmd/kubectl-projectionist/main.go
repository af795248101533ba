// Command kubectl-projectionist is a kubectl plugin for Projections: it
// shows a Projection's status and lag, and suspends and resumes it.
//
//	kubectl projectionist status user-count -n shop
//	kubectl projectionist status user-count --watch
//	kubectl projectionist suspend user-count --wait
//	kubectl projectionist resume user-count --wait
//	kubectl projectionist list -A
//
// It talks to the Kubernetes API server only, never to the database, so
// anyone with RBAC on projections.projectionist.dev can use it; the
// connection string's Secret stays with the operator. Install it with
//
//	go install github.com/projectionist/projectionist/cmd/kubectl-projectionist@latest
//
// and kubectl finds it on PATH. Every command has -h/--help with examples.
// Exit codes: 0 success, 1 a failure (no such Projection, the API server
// refused or is unreachable, a --wait timed out), 2 bad usage (an unknown
// command or flag, a missing name, no cluster configured).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := newCLI(os.Stdout, os.Stderr).run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
