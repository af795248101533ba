package pgtest

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestStartTLS: the server takes verify-full connections with its CA, over
// TLS, and refuses connections without TLS, with a wrong password, or that
// trust another CA.
func TestStartTLS(t *testing.T) {
	srv := StartTLS(t)
	db := srv.NewDatabase(t)

	conn, err := pgx.Connect(t.Context(), srv.URL(db, "sslmode=verify-full&sslrootcert="+srv.CA.CertFile))
	if err != nil {
		t.Fatalf("connecting with verify-full and the server's CA: %v", err)
	}
	defer conn.Close(t.Context())
	var ssl bool
	var current string
	if err := conn.QueryRow(t.Context(), "SELECT ssl, current_database() FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl, &current); err != nil {
		t.Fatal(err)
	}
	if !ssl || current != db {
		t.Errorf("connected to %q with ssl=%v, want %q over TLS", current, ssl, db)
	}

	wrongPassword := *srv
	wrongPassword.Password = "not-" + srv.Password
	other := NewCA(t, "another CA")
	for _, tc := range []struct{ name, dsn, want string }{
		{"without TLS", srv.URL(db, "sslmode=disable"), "no encryption"},
		{"wrong password", wrongPassword.URL(db, "sslmode=verify-full&sslrootcert="+srv.CA.CertFile), "password authentication failed"},
		{"another CA", srv.URL(db, "sslmode=verify-full&sslrootcert="+other.CertFile), "x509: certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := pgx.Connect(t.Context(), tc.dsn)
			if err == nil {
				conn.Close(t.Context())
				t.Fatalf("connected; want an error saying %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
		})
	}
}
