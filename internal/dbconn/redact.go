package dbconn

import (
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Mask is what replaces a password.
const Mask = "xxxxx"

// Redactor removes the passwords of known connection strings from text:
// the password itself wherever it appears, in every spelling it may have
// been written in (raw, percent-encoded, quoted), and then anything that
// looks like a password in a connection string ([Redact]). The zero value
// knows no password and applies [Redact] only.
type Redactor struct {
	secrets []string
}

// NewRedactor returns a Redactor for the passwords that connecting with
// each dsn would use: the one pgx parses out of it (from the DSN itself,
// PGPASSWORD or a password file), and, for a DSN that does not parse,
// whatever a lenient reading takes for its password, so that a malformed
// connection string is covered too. PGPASSWORD is always included.
func NewRedactor(dsns ...string) *Redactor {
	r := &Redactor{}
	r.add(os.Getenv("PGPASSWORD"))
	for _, dsn := range dsns {
		if cfg, err := pgconn.ParseConfig(dsn); err == nil {
			r.add(cfg.Password)
		}
		// The lenient reading only when pgx's is not there: it also
		// takes pieces of the value for passwords.
		if _, err := pgconn.ParseConfig(dsn); err != nil {
			for _, s := range candidates(dsn) {
				r.add(s)
			}
		}
	}
	// Longest first: a secret that contains another is replaced whole.
	slices.SortFunc(r.secrets, func(a, b string) int { return len(b) - len(a) })
	return r
}

// add records s and the spellings it may appear in.
func (r *Redactor) add(s string) {
	if s == "" {
		return
	}
	for _, v := range []string{s, url.PathEscape(s), url.QueryEscape(s), url.UserPassword("u", s).String()[2:], quoteValue(s)} {
		if v != "" && !slices.Contains(r.secrets, v) {
			r.secrets = append(r.secrets, v)
		}
	}
	if u, err := url.PathUnescape(s); err == nil && u != s {
		r.add(u)
	}
}

// String returns s without the known passwords and without anything
// [Redact] takes for a password.
func (r *Redactor) String(s string) string {
	if r != nil {
		for _, secret := range r.secrets {
			s = strings.ReplaceAll(s, secret, Mask)
		}
	}
	return Redact(s)
}

// Error returns err with its message redacted by r; errors.Is and
// errors.As still see err. It returns nil for nil.
func (r *Redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	return &redactedError{msg: r.String(err.Error()), err: err}
}

// ReplaceAttr is a slog.HandlerOptions.ReplaceAttr that applies r to
// every string and error in a log line, the message included: the
// operator's, the worker's and the CLI's logs are redacted alike.
func (r *Redactor) ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	switch v := a.Value; v.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(r.String(v.String()))
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			a.Value = slog.StringValue(r.String(err.Error()))
		}
	}
	return a
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// quoteValue is s as a quoted key=value value: in single quotes, with
// quotes and backslashes escaped.
func quoteValue(s string) string {
	return strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s)
}

// candidates returns what a lenient reading of dsn, one pgx cannot parse,
// takes for its passwords, raw as written and with quotes and escapes
// resolved: the user info after the first colon of a URL, password and
// sslpassword query values, and password and sslpassword values of
// key=value pairs, quoted or not, up to the next key=, with unterminated
// quotes running to the end. Its words of four bytes or more are
// candidates too, since an error may quote a piece of a malformed value.
func candidates(dsn string) []string {
	var out []string
	add := func(v string) {
		out = append(out, v, unquoteValue(v), strings.Trim(v, "'"), strings.TrimRight(unquoteValue(v), `\`))
		for w := range strings.FieldsSeq(v) {
			if w = strings.Trim(w, "'"); len(w) >= 4 {
				out = append(out, w, unquoteValue(w))
			}
		}
	}
	for _, span := range passwordSpans(dsn) {
		add(dsn[span[0]:span[1]])
	}
	for _, m := range queryKey.FindAllStringSubmatchIndex(dsn, -1) {
		if k := strings.ToLower(dsn[m[2]:m[3]]); k != "password" && k != "sslpassword" {
			continue
		}
		rest := dsn[m[1]:]
		if next := nextParam.FindStringIndex(rest); next != nil {
			rest = rest[:next[0]]
		}
		add(rest)
	}
	for _, m := range kvKey.FindAllStringIndex(dsn, -1) {
		rest := dsn[m[1]:]
		if next := nextKey.FindStringIndex(rest); next != nil {
			rest = rest[:next[0]]
		}
		add(strings.TrimSpace(rest))
	}
	return out
}

// nextKey and nextParam are the start of the next key=value pair and the
// next query parameter.
var (
	nextKey   = regexp.MustCompile(`\s+[A-Za-z_]+\s*=`)
	nextParam = regexp.MustCompile(`&[A-Za-z_%0-9]+=`)
)

// unquoteValue is a key=value value without its quotes, escapes resolved.
func unquoteValue(v string) string {
	v = strings.TrimPrefix(v, "'")
	v = strings.TrimSuffix(v, "'")
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// Redact masks whatever looks like a password of a PostgreSQL connection
// string in s, which may be a connection string or any text that contains
// one (an error message that echoes it):
//
//   - a URL's user info after the first colon, up to the last @ that
//     follows it (an unencoded @, space or slash in a password does not
//     end it);
//   - password and sslpassword query parameters (also percent-encoded
//     spellings of the key), up to the next &;
//   - password= and sslpassword= key=value pairs (any case, spaces around
//     =), quoted with backslash escapes or unquoted up to unescaped
//     whitespace; an unterminated quote masks the rest of s;
//   - PGPASSWORD=value.
//
// It errs on the side of masking too much. Everything else is left as it
// was. A [Redactor] that knows the connection string is more thorough.
func Redact(s string) string {
	spans := passwordSpans(s)
	if len(spans) == 0 {
		return s
	}
	var b strings.Builder
	last := 0
	for _, sp := range spans {
		if sp[0] < last {
			// Overlaps an earlier span: extend the mask.
			if sp[1] > last {
				last = sp[1]
			}
			continue
		}
		b.WriteString(s[last:sp[0]])
		b.WriteString(Mask)
		last = sp[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

var (
	urlScheme = regexp.MustCompile(`(?i)postgres(?:ql)?://`)
	queryKey  = regexp.MustCompile(`[?&]([^=&#?\s]*)=`)
	kvKey     = regexp.MustCompile(`(?i)(?:^|[^?&%\w])((?:ssl|pg)?password)[\t\n\v\f\r ]*=[\t\n\v\f\r ]*`)
)

// passwordSpans returns the [start, end) byte ranges of s that Redact
// masks, sorted by start.
func passwordSpans(s string) [][2]int {
	var spans [][2]int
	for _, m := range urlScheme.FindAllStringIndex(s, -1) {
		rest := s[m[1]:]
		at := strings.LastIndexByte(rest, '@')
		if at < 0 {
			continue
		}
		colon := strings.IndexByte(rest[:at], ':')
		if colon < 0 {
			continue
		}
		spans = append(spans, [2]int{m[1] + colon + 1, m[1] + at})
	}
	for _, m := range queryKey.FindAllStringSubmatchIndex(s, -1) {
		key, err := url.QueryUnescape(s[m[2]:m[3]])
		if err != nil {
			key = s[m[2]:m[3]]
		}
		if k := strings.ToLower(key); k != "password" && k != "sslpassword" {
			continue
		}
		end := m[1]
		for end < len(s) && s[end] != '&' {
			end++
		}
		spans = append(spans, [2]int{m[1], end})
	}
	for _, m := range kvKey.FindAllStringSubmatchIndex(s, -1) {
		start, end := m[1], m[1]
		if end < len(s) && s[end] == '\'' {
			end++
			for end < len(s) && s[end] != '\'' {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			end = min(end+1, len(s)) // the closing quote
		} else {
			for end < len(s) && !isSpace(s[end]) {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			end = min(end, len(s))
		}
		spans = append(spans, [2]int{start, end})
	}
	slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
	return spans
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}
