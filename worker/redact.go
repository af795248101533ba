package worker

import (
	"log/slog"

	"github.com/projectionist/projectionist/internal/dbconn"
)

// RedactDSN masks the passwords in s: a PostgreSQL connection string in URL
// form (postgres://user:password@host, ?password=, ?sslpassword=) or
// key=value form (password=secret, password='with spaces'), or any text
// that contains such strings, such as an error message that echoes one. It
// errs on the side of masking too much: a malformed URL's user info is
// masked up to its last @, an unterminated quote to the end. The worker
// itself never echoes a connection string; its logger and errors also
// remove the configured password wherever it appears.
func RedactDSN(s string) string { return dbconn.Redact(s) }

// redactor removes the password of dsn (and PGPASSWORD) from text.
func redactor(dsn string) *dbconn.Redactor { return dbconn.NewRedactor(dsn) }

// errAttr logs an error with its passwords masked, whatever the logger.
func errAttr(err error) slog.Attr { return slog.String("error", RedactDSN(err.Error())) }

// redactedError masks the passwords in an error's message and keeps the
// error for errors.Is and errors.As.
type redactedError struct{ err error }

func (e redactedError) Error() string { return RedactDSN(e.err.Error()) }
func (e redactedError) Unwrap() error { return e.err }
