package projection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Resetter is a Projection that can clear its own read model, so that it
// can be rebuilt declaratively: by a reset request ([RequestReset], which
// the operator makes for a Projection's spec.rebuildToken) that the
// projection's workers carry out when they start ([ApplyPendingReset]).
//
// Only the projection knows its read model, hence the hook. Reset runs in
// the transaction that also deletes the projection's checkpoints, frontier
// and dead letters: the read model and the checkpoints go back to the
// beginning of the log together or not at all, and the processors then
// apply every event again, exactly once.
type Resetter interface {
	Projection
	// Reset deletes the read model's rows through tx (TRUNCATE or DELETE
	// of the tables Handle writes; a DROP works too if the worker's Setup
	// creates them again). It must not commit or roll back tx. It runs
	// once per reset request, in one worker, with the projection's
	// topology locked FOR UPDATE: no batch of the projection runs
	// meanwhile. An error rolls everything back; the request stays
	// pending, its error is recorded ([ResetStatus.LastError]), and the
	// worker retries.
	Reset(ctx context.Context, tx pgx.Tx) error
}

// ErrResetNotSupported is the error recorded, and returned by
// [ResetNotSupportedError.Unwrap], when a reset is requested for a
// projection that does not implement [Resetter].
var ErrResetNotSupported = errors.New("projection does not implement projection.Resetter")

// ResetNotSupportedError is why a reset request failed: the projection has
// no Reset hook. ApplyPendingReset records its message as the request's
// outcome and changes nothing else.
type ResetNotSupportedError struct {
	// Projection is the projection's name.
	Projection string
	// Type is the projection's Go type, for the message.
	Type string
}

// Error says what to do instead.
func (e *ResetNotSupportedError) Error() string {
	return fmt.Sprintf("projection %q (%s) does not implement projection.Resetter: it cannot be rebuilt declaratively; "+
		"add a Reset(ctx, tx) method that clears its read model, or rebuild it by hand (docs/operations.md, \"Rebuild by hand\"); "+
		"its checkpoints and read model were left as they were", e.Projection, e.Type)
}

// Unwrap returns [ErrResetNotSupported].
func (e *ResetNotSupportedError) Unwrap() error { return ErrResetNotSupported }

// MaxResetTokenLength bounds a reset request's token, in bytes.
const MaxResetTokenLength = 253

// ResetStatus is the state of a projection's reset requests.
type ResetStatus struct {
	// Projection is the projection's name.
	Projection string
	// RequestedToken is the token of the latest request; empty if none
	// was ever made.
	RequestedToken string
	// RequestedAt is when RequestedToken was first requested.
	RequestedAt time.Time
	// DoneToken is the token of the latest request carried out, or
	// refused (Error is then set); empty if none.
	DoneToken string
	// DoneAt is when DoneToken was carried out or refused.
	DoneAt time.Time
	// DoneBy names the process that did it ("hostname/pid").
	DoneBy string
	// Error is why DoneToken's request failed, e.g. a
	// [*ResetNotSupportedError]'s message; empty when it succeeded.
	Error string
	// LastError is the last error of a Reset hook for the pending
	// request, which the workers retry; empty if none.
	LastError string
}

// Pending reports whether a reset has been requested and not yet carried
// out or refused.
func (s ResetStatus) Pending() bool {
	return s.RequestedToken != "" && s.RequestedToken != s.DoneToken
}

// Succeeded reports whether the request with token was carried out.
func (s ResetStatus) Succeeded(token string) bool {
	return token != "" && s.DoneToken == token && s.Error == ""
}

// Failed reports whether the request with token was refused: the
// projection could not be reset, and nothing was changed.
func (s ResetStatus) Failed(token string) bool {
	return token != "" && s.DoneToken == token && s.Error != ""
}

// RequestReset asks for projection's read model and checkpoints to be
// reset, under token: its workers do it, through the projection's
// [Resetter] hook, when they next start ([ApplyPendingReset]). Stop them
// first, and start them again after: a worker that keeps running does not
// reset (though a reset done by another one fences it, and it then
// replays from the beginning of the log too).
//
// It is idempotent: requesting the token already requested (pending or
// done) changes nothing. A different token replaces a pending request,
// and asks for a new reset once the last one is done.
func RequestReset(ctx context.Context, db DBTX, projection, token string) error {
	if projection == "" {
		return fmt.Errorf("%w: projection name is empty", ErrInvalidConfig)
	}
	if token == "" || len(token) > MaxResetTokenLength {
		return fmt.Errorf("%w: projection %q: reset token must be 1 to %d bytes, is %d", ErrInvalidConfig, projection, MaxResetTokenLength, len(token))
	}
	_, err := db.Exec(ctx, requestResetSQL, projection, token)
	if err != nil {
		return noSchema(fmt.Errorf("requesting reset %q of projection %q: %w", token, projection, err))
	}
	return nil
}

// GetResetStatus reads the state of projection's reset requests. A
// projection that was never asked to reset has a zero status (with its
// name), and no error.
func GetResetStatus(ctx context.Context, db DBTX, projection string) (ResetStatus, error) {
	return getResetStatus(ctx, db, readResetSQL, projection)
}

// getResetStatus reads the reset request through query: readResetSQL, or
// readResetForUpdateSQL.
func getResetStatus(ctx context.Context, db DBTX, query, projection string) (ResetStatus, error) {
	s := ResetStatus{Projection: projection}
	err := db.QueryRow(ctx, query, projection).Scan(&s.RequestedToken, &s.RequestedAt, &s.DoneToken, &s.DoneAt,
		&s.DoneBy, &s.Error, &s.LastError)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, noSchema(fmt.Errorf("reading reset requests of projection %q: %w", projection, err))
	}
	if s.DoneToken == "" {
		s.DoneAt = time.Time{}
	}
	return s, nil
}

// ResetOutcome is what [ApplyPendingReset] did.
type ResetOutcome int

const (
	// ResetNothingPending: no reset was pending (or another worker had
	// just done it); nothing changed.
	ResetNothingPending ResetOutcome = iota
	// ResetApplied: this call reset the read model and the checkpoints.
	ResetApplied
	// ResetRefused: the projection does not implement [Resetter]; the
	// request is recorded as failed and nothing else changed.
	ResetRefused
)

// AppliedReset is what [ApplyPendingReset] did, and for which request.
type AppliedReset struct {
	Outcome ResetOutcome
	// Token is the request's token; empty for ResetNothingPending.
	Token string
	// Refusal is why the request was refused (ResetRefused); nil
	// otherwise.
	Refusal error
}

// ApplyPendingReset carries out projection p's pending reset request, if
// any: a worker calls it when it starts, before processing. Several
// workers may call it at once: they queue on the request's row, the first
// one does the reset and the others find it done.
//
// With a request pending and p a [Resetter], it runs one transaction that
// locks the projection's topology FOR UPDATE (so it waits for any batch in
// flight, and fences later ones), calls p.Reset, deletes the projection's
// checkpoints, frontier and dead letters, and marks the request done. The
// topology keeps its partition count and manager; its generation grows by
// one, so that a processor still running reloads its state and starts
// over from the beginning of the log with everybody else. Every partition
// then applies every event again, exactly once: nothing appended meanwhile
// is lost, since the checkpoints restart at the beginning.
//
// With p not a Resetter, it records the request as failed with a
// [*ResetNotSupportedError] (returned in [AppliedReset.Refusal], not as an
// error) and changes nothing else: the caller goes on processing from the
// checkpoints it had. An error of p.Reset rolls everything back, is
// recorded as the request's [ResetStatus.LastError] and is returned; the
// request stays pending.
func ApplyPendingReset(ctx context.Context, db DBTX, p Projection) (AppliedReset, error) {
	if p == nil {
		return AppliedReset{}, fmt.Errorf("%w: projection is nil", ErrInvalidConfig)
	}
	name := p.Name()
	// The common case, every worker start: nothing pending. Answer it
	// without a lock.
	s, err := GetResetStatus(ctx, db, name)
	if err != nil || !s.Pending() {
		return AppliedReset{}, err
	}
	by := defaultSwitcher(ManagerStandalone)
	var done AppliedReset
	var hookErr error
	token := s.RequestedToken
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		s, err := getResetStatus(ctx, tx, readResetForUpdateSQL, name)
		if err != nil || !s.Pending() {
			return err // another worker did it while this one waited
		}
		token = s.RequestedToken
		r, ok := p.(Resetter)
		if !ok {
			refusal := &ResetNotSupportedError{Projection: name, Type: fmt.Sprintf("%T", p)}
			done = AppliedReset{Outcome: ResetRefused, Token: s.RequestedToken, Refusal: refusal}
			_, err := tx.Exec(ctx, completeResetSQL, name, token, by, refusal.Error())
			return err
		}
		if _, err := tx.Exec(ctx, lockTopologySQL, name); err != nil {
			return fmt.Errorf("locking topology: %w", err)
		}
		if err := r.Reset(ctx, tx); err != nil {
			hookErr = err
			return fmt.Errorf("reset hook: %w", err)
		}
		// Dead letters go too, as with ResetProjection: the replay meets
		// their events again, and a retry of one would apply it twice.
		if _, err := tx.Exec(ctx, completeResetSQL, name, token, by, nil); err != nil {
			return fmt.Errorf("deleting checkpoints: %w", err)
		}
		done = AppliedReset{Outcome: ResetApplied, Token: s.RequestedToken}
		return nil
	})
	if hookErr != nil && ctx.Err() == nil {
		// Recorded apart from the rolled-back transaction, so that the
		// operator can show it; best effort, the error is returned anyway.
		_, _ = db.Exec(ctx, recordResetErrorSQL, name, hookErr.Error(), token)
	}
	if hookErr != nil {
		// Not noSchema: a table missing is the hook's, not the schema's.
		return AppliedReset{}, fmt.Errorf("resetting projection %q (request %q): %w", name, token, err)
	}
	if err != nil {
		return AppliedReset{}, noSchema(fmt.Errorf("resetting projection %q (request %q): %w", name, token, err))
	}
	return done, nil
}
