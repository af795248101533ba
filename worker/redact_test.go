package worker

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

func TestRedactDSN(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://alice:s3cret@db:5432/app?sslmode=disable", "postgres://alice:xxxxx@db:5432/app?sslmode=disable"},
		{"postgresql://alice:s3cret@db/app", "postgresql://alice:xxxxx@db/app"},
		{"POSTGRES://alice:s3cret@db/app", "POSTGRES://alice:xxxxx@db/app"},
		{"postgres://:s3cret@db/app", "postgres://:xxxxx@db/app"},
		{"postgres://alice:s3@cr:et@db/app", "postgres://alice:xxxxx@db/app"},
		{"postgres://alice:s3cret@db1:5432,db2:5432/app", "postgres://alice:xxxxx@db1:5432,db2:5432/app"},
		{"postgres://db/app?user=alice&password=s3cret&sslmode=disable", "postgres://db/app?user=alice&password=xxxxx&sslmode=disable"},
		{"postgres://db/app?password=s3cret", "postgres://db/app?password=xxxxx"},
		{"postgres://db/app?sslmode=verify-full&sslpassword=s3cret", "postgres://db/app?sslmode=verify-full&sslpassword=xxxxx"},
		{"host=db user=alice password=s3cret dbname=app", "host=db user=alice password=xxxxx dbname=app"},
		{"password=s3cret host=db", "password=xxxxx host=db"},
		{"host=db password = s3cret dbname=app", "host=db password = xxxxx dbname=app"},
		{`host=db password='s3 c\'ret' dbname=app`, "host=db password=xxxxx dbname=app"},
		{"host=db PASSWORD=s3&cret sslpassword=s3cret", "host=db PASSWORD=xxxxx sslpassword=xxxxx"},
		// no password: unchanged
		{"postgres://alice@db:5432/app", "postgres://alice@db:5432/app"},
		{"postgres://db/app?sslmode=disable", "postgres://db/app?sslmode=disable"},
		{"host=db user=alice dbname=app", "host=db user=alice dbname=app"},
		{"", ""},
		// inside error messages
		{
			"failed to connect to `user=alice database=app`: 127.0.0.1:5432: password authentication failed for user \"alice\"",
			"failed to connect to `user=alice database=app`: 127.0.0.1:5432: password authentication failed for user \"alice\"",
		},
		{
			"connecting: cannot parse `postgres://alice:s3cret@db:x/app`: invalid port",
			"connecting: cannot parse `postgres://alice:xxxxx@db:x/app`: invalid port",
		},
		{
			"connecting: cannot parse `host=db password=s3cret port=x`: invalid port",
			"connecting: cannot parse `host=db password=xxxxx port=x`: invalid port",
		},
	} {
		if got := RedactDSN(tc.in); got != tc.want {
			t.Errorf("RedactDSN(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

// TestRedactDSNErrors checks real pgx errors and wrapped ones.
func TestRedactDSNErrors(t *testing.T) {
	for _, dsn := range []string{
		"postgres://alice:s3cret@db:notaport/app",
		"postgres://alice:s3cret@db/app?sslmode=sometimes",
		"host=db password=s3cret port=notaport",
	} {
		_, err := pgxpool.ParseConfig(dsn)
		if err == nil {
			t.Fatalf("ParseConfig(%q) succeeded", dsn)
		}
		wrapped := fmt.Errorf("worker: opening %s: %w", dsn, err)
		if got := RedactDSN(wrapped.Error()); strings.Contains(got, "s3cret") {
			t.Errorf("RedactDSN(%q) = %q: shows the password", wrapped, got)
		}
		if got := (redactedError{wrapped}).Error(); strings.Contains(got, "s3cret") {
			t.Errorf("redactedError = %q: shows the password", got)
		}
		if !errors.Is(redactedError{wrapped}, err) {
			t.Errorf("redactedError does not unwrap")
		}
	}
}

// TestLoggerRedacts checks the default logger masks passwords in messages,
// strings and errors.
func TestLoggerRedacts(t *testing.T) {
	for _, format := range []LogFormat{LogFormatJSON, LogFormatText} {
		var b bytes.Buffer
		log := Config{LogFormat: format}.newLogger(&b)
		dsn := "postgres://alice:s3cret@db/app"
		log.Info("connecting to "+dsn, "dsn", dsn, "error", errors.New("cannot parse `host=db password=s3cret`"))
		if strings.Contains(b.String(), "s3cret") || !strings.Contains(b.String(), "alice:xxxxx@db") {
			t.Errorf("%s log line shows the password: %s", format, b.String())
		}
	}
}
