package worker

import (
	"log/slog"
	"regexp"
)

// mask replaces a password.
const mask = "xxxxx"

var (
	// The password of a URL's user info, up to the last @ before
	// whitespace: an unencoded @ in a password must not leak the rest.
	urlPassword = regexp.MustCompile(`(?i)(postgres(?:ql)?://[^:@/\s]*:)\S*@`)
	// A password among a URL's query parameters, which & separates.
	queryPassword = regexp.MustCompile(`(?i)([?&](?:ssl)?password=)[^&#\s]*`)
	// A password among key=value pairs, quoted or up to whitespace, and
	// not preceded by ? or & (a query parameter, above).
	keywordPassword = regexp.MustCompile(`(?i)(^|[^?&\w])((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)`)
)

// RedactDSN masks the passwords in s: a PostgreSQL connection string in URL
// form (postgres://user:password@host, ?password=, ?sslpassword=) or
// key=value form (password=secret, password='with spaces'), or any text
// that contains such strings, such as an error message that echoes one.
// Everything else is left as it was.
func RedactDSN(s string) string {
	s = urlPassword.ReplaceAllString(s, "${1}"+mask+"@")
	s = queryPassword.ReplaceAllString(s, "${1}"+mask)
	return keywordPassword.ReplaceAllString(s, "${1}${2}"+mask)
}

// redactAttr is a slog ReplaceAttr that applies RedactDSN to every string
// and error in a log line, the message included.
func redactAttr(_ []string, a slog.Attr) slog.Attr {
	switch v := a.Value; v.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(RedactDSN(v.String()))
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			a.Value = slog.StringValue(RedactDSN(err.Error()))
		}
	}
	return a
}

// errAttr logs an error with its passwords masked, whatever the logger.
func errAttr(err error) slog.Attr { return slog.String("error", RedactDSN(err.Error())) }

// redactedError masks the passwords in an error's message and keeps the
// error for errors.Is and errors.As.
type redactedError struct{ err error }

func (e redactedError) Error() string { return RedactDSN(e.err.Error()) }
func (e redactedError) Unwrap() error { return e.err }
