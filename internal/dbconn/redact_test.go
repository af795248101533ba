package dbconn

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// pw is a distinctive password: no output may contain it.
const pw = "S3cr3tPw9"

// badDSNs are the shapes of issue 12 and their relatives: connection
// strings that pgx cannot parse and whose password its error showed.
var badDSNs = []struct{ dsn, password string }{
	{"postgres://app:" + pw + " x@127.0.0.1:30373/app", pw + " x"},
	{"postgres://app:" + pw + "@127.0.0.1:notaport/app", pw},
	{"postgres://app:" + pw + "@127.0.0.1/app?sslmode=sometimes", pw},
	{"postgres://app:x " + pw + "@127.0.0.1/app", "x " + pw},
	{"postgres://app:" + pw + "%zz@127.0.0.1/app", pw + "%zz"},
	{"postgres://127.0.0.1/app?password=" + pw + " x&port=nope", pw + " x"},
	{"host=127.0.0.1 user=app password='x " + pw + "' port=notaport", "x " + pw},
	{"host=127.0.0.1 user=app password = 'x " + pw + "' port=notaport", "x " + pw},
	{"host=127.0.0.1 user=app password='x\\' " + pw + "' port=notaport", "x' " + pw},
	{"host=127.0.0.1 user=app password='x " + pw, "x " + pw},
	{"host=127.0.0.1 user=app password=x\\ " + pw + " port=notaport", "x " + pw},
	{"host=127.0.0.1 user=app password=x " + pw + " port=5432", "x " + pw},
	{"host=127.0.0.1 user=app password=" + pw + " sslmode=sometimes", pw},
	{"host=127.0.0.1 user=app password=" + pw + " pool_max_conns=x", pw},
	{"host=127.0.0.1 user=app password='" + pw + "\\", pw},
}

// goodDSNs parse, with password pw.
var goodDSNs = []string{
	"postgres://app:" + pw + "@127.0.0.1:5432/app",
	"postgresql://" + url.UserPassword("app", pw+" @:/x").String() + "@127.0.0.1/app",
	"postgres://app@127.0.0.1/app?password=" + pw + "&sslmode=disable",
	"postgres://app@127.0.0.1/app?sslmode=disable&pass%77ord=" + pw,
	"host=127.0.0.1 user=app password=" + pw,
	"host=127.0.0.1 user=app password='a b " + pw + "'",
	"host=127.0.0.1 user=app password = 'a\\'b " + pw + "' dbname=app",
	"host=127.0.0.1 user=app password=a\\ " + pw + " dbname=app",
}

func TestParseConfigNeverQuotesTheDSN(t *testing.T) {
	for _, bad := range badDSNs {
		dsn := bad.dsn
		_, err := ParseConfig(dsn, Options{})
		if err == nil {
			t.Errorf("ParseConfig(%q) succeeded", dsn)
			continue
		}
		var de *DSNError
		if !errors.As(err, &de) || !errors.Is(err, ErrInvalidDSN) {
			t.Errorf("ParseConfig(%q) = %T %v, want a *DSNError", dsn, err, err)
		}
		if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "127.0.0.1") {
			t.Errorf("ParseConfig(%q) = %q: quotes the connection string", dsn, err)
		}
	}
}

func TestParseConfigProblems(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://app:a b@h/db", "invalid database connection string: not a valid URL; percent-encode"},
		{"host=h password='a", "invalid database connection string: not valid key=value pairs"},
		{"host=h port=x", "invalid database connection string: invalid port"},
		{"host=h sslmode=sometimes", "invalid database connection string: the TLS settings are invalid"},
	} {
		_, err := ParseConfig(tc.dsn, Options{})
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%q) = %v, want %q...", tc.dsn, err, tc.want)
		}
	}
}

func TestRedactorRemovesTheKnownPassword(t *testing.T) {
	all := append([]string{}, goodDSNs...)
	for _, bad := range badDSNs {
		all = append(all, bad.dsn)
	}
	for i, dsn := range all {
		cfg, perr := pgxpool.ParseConfig(dsn)
		var secret string
		switch {
		case perr == nil:
			secret = cfg.ConnConfig.Password
		case i >= len(goodDSNs):
			secret = badDSNs[i-len(goodDSNs)].password
		default:
			t.Fatalf("%q does not parse: %v", dsn, perr)
		}
		text := fmt.Sprintf("opening %s: %v; password %s, %s", dsn, perr, secret, url.QueryEscape(secret))
		if got := NewRedactor(dsn).String(text); strings.Contains(got, secret) {
			t.Errorf("NewRedactor(%q).String() = %q", dsn, got)
		}
		if err := NewRedactor(dsn).Error(errors.New(text)); strings.Contains(err.Error(), secret) {
			t.Errorf("NewRedactor(%q).Error() = %q", dsn, err)
		}
	}
}

func TestRedactorPGPASSWORD(t *testing.T) {
	t.Setenv("PGPASSWORD", pw)
	if got := NewRedactor("host=h").String("the password is " + pw); strings.Contains(got, pw) {
		t.Errorf("String() = %q", got)
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://alice:s3cret@db:5432/app?sslmode=disable", "postgres://alice:xxxxx@db:5432/app?sslmode=disable"},
		{"POSTGRES://alice:s3cret@db/app", "POSTGRES://alice:xxxxx@db/app"},
		{"postgres://alice:s3@cr:et@db/app", "postgres://alice:xxxxx@db/app"},
		{"postgres://alice:s3 cr et@db/app", "postgres://alice:xxxxx@db/app"},
		{"postgres://db/app?user=alice&password=s3cret&sslmode=disable", "postgres://db/app?user=alice&password=xxxxx&sslmode=disable"},
		{"postgres://db/app?pass%77ord=s3cret", "postgres://db/app?pass%77ord=xxxxx"},
		{"host=db user=alice password=s3cret dbname=app", "host=db user=alice password=xxxxx dbname=app"},
		{"host=db password = s3cret dbname=app", "host=db password = xxxxx dbname=app"},
		{`host=db password='s3 c\'ret' dbname=app`, "host=db password=xxxxx dbname=app"},
		{`host=db password=s3\ cret dbname=app`, "host=db password=xxxxx dbname=app"},
		{`host=db password='s3 cret`, "host=db password=xxxxx"},
		{"PGPASSWORD=s3cret psql", "PGPASSWORD=xxxxx psql"},
		{"postgres://alice@db:5432/app", "postgres://alice@db:5432/app"},
		{"host=db user=alice dbname=app", "host=db user=alice dbname=app"},
		{`password authentication failed for user "alice"`, `password authentication failed for user "alice"`},
		{"", ""},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

// FuzzRedaction checks, for any password in any shape of connection
// string, well-formed or not, that ParseConfig's error does not contain
// it, that a Redactor for the connection string removes it from any text,
// and that Redact alone removes it from every connection string pgx
// accepts with that password.
func FuzzRedaction(f *testing.F) {
	for _, p := range []string{pw, pw + " q", "q " + pw, "a'b" + pw, `a\` + pw, "p@ss/w:rd" + pw, pw + "%zz", pw + "&a=b", "é" + pw, " " + pw + "  "} {
		for shape := range byte(len(shapes)) {
			f.Add(p, shape)
		}
	}
	f.Fuzz(func(t *testing.T, password string, shape byte) {
		if len(strings.TrimSpace(password)) < 6 || strings.ContainsAny(password, "\x00x") {
			// Too short to be told apart from the rest of the text, or
			// holding the mask's letter, which the mask next to what is
			// left could spell.
			return
		}
		build := shapes[int(shape)%len(shapes)]
		if strings.Contains(build("\x00"), "?password=\x00") && strings.Contains(password, "&") {
			// An unencoded & in a query value starts another parameter:
			// no reader can tell where such a password ends.
			return
		}
		dsn := build(password)
		for _, other := range []string{"127.0.0.1", "postgres", "app", "host=", "user=", "sslmode", "disable", "password"} {
			if strings.Contains(other, password) {
				return
			}
		}
		cfg, err := ParseConfig(dsn, Options{})
		if err != nil && strings.Contains(err.Error(), password) {
			t.Fatalf("ParseConfig(%q) = %q", dsn, err)
		}
		if err == nil {
			// What the user meant is not what pgx read: the secret is
			// what pgx read.
			if password = cfg.ConnConfig.Password; len(password) < 6 {
				return
			}
		}
		_, perr := pgxpool.ParseConfig(dsn)
		text := fmt.Sprintf("dsn %s; pgx: %v", dsn, perr)
		if err == nil {
			text += "; " + password
		}
		if got := NewRedactor(dsn).String(text); strings.Contains(got, password) {
			t.Fatalf("NewRedactor(%q).String(%q) = %q", dsn, text, got)
		}
		if err == nil {
			if got := Redact("connecting to " + dsn + ": refused"); strings.Contains(got, password) {
				t.Fatalf("Redact(%q) = %q", dsn, got)
			}
		}
	})
}

// shapes build a connection string around a password.
var shapes = []func(p string) string{
	func(p string) string { return "postgres://app:" + p + "@127.0.0.1:5432/app" },
	func(p string) string { return "postgres://app:" + url.PathEscape(p) + "@127.0.0.1:5432/app" },
	func(p string) string {
		return "postgres://app:" + url.QueryEscape(p) + "@127.0.0.1/app?sslmode=disable"
	},
	func(p string) string { return "postgres://127.0.0.1/app?password=" + p + "&sslmode=disable" },
	func(p string) string { return "postgres://127.0.0.1/app?password=" + url.QueryEscape(p) },
	func(p string) string { return "host=127.0.0.1 user=app password=" + p + " dbname=app" },
	func(p string) string { return "host=127.0.0.1 user=app password='" + p + "' dbname=app" },
	func(p string) string { return "host=127.0.0.1 user=app password='" + quoteValue(p) + "' dbname=app" },
	func(p string) string { return "host=127.0.0.1 password = '" + quoteValue(p) + "'" },
	func(p string) string { return "host=127.0.0.1 user=app password='" + p },
	func(p string) string {
		return "host=127.0.0.1 user=app password=" + strings.NewReplacer(`\`, `\\`, " ", `\ `, "'", `\'`).Replace(p)
	},
	func(p string) string { return "host=127.0.0.1 user=app password=" + p + " port=notaport" },
}

// A logger with ReplaceAttr shows no password of a known DSN, nor one that
// looks like a connection string's, in its message, string attributes or
// errors; the zero Redactor masks the latter.
func TestReplaceAttr(t *testing.T) {
	dsn := "postgres://app:" + pw + "@127.0.0.1:1/app"
	for name, r := range map[string]*Redactor{"known DSN": NewRedactor(dsn), "zero value": {}} {
		var out strings.Builder
		log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{ReplaceAttr: r.ReplaceAttr}))
		log.Info("connecting to "+dsn, "dsn", dsn, "error", fmt.Errorf("dialing %s: refused", dsn))
		if strings.Contains(out.String(), pw) || strings.Count(out.String(), Mask) != 3 {
			t.Errorf("%s: want the password masked three times:\n%s", name, out.String())
		}
	}
}
