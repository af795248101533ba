package controllers

import (
	"crypto/x509"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
)

func TestSSLParam(t *testing.T) {
	for _, tc := range []struct {
		dsn, file, without string
	}{
		{"postgres://app:pw@db:5432/app?sslmode=verify-full&sslrootcert=/etc/db-ca/ca.crt", "/etc/db-ca/ca.crt",
			"postgres://app:pw@db:5432/app?sslmode=verify-full"},
		{"postgres://app:pw@db/app?sslrootcert=%2Fetc%2Fdb-ca%2Fca.crt&sslmode=require", "/etc/db-ca/ca.crt",
			"postgres://app:pw@db/app?sslmode=verify-ca"},
		{"host=db user=app password='p w' sslrootcert=/etc/db-ca/ca.crt sslmode=verify-full", "/etc/db-ca/ca.crt",
			"host=db user=app password='p w' sslmode=verify-full"},
		{"host=db sslrootcert = '/etc/db ca/it\\'s.crt' sslmode=require", "/etc/db ca/it's.crt",
			"host=db sslmode=verify-ca"},
		{"postgres://app@db/app?sslmode=verify-full", "", ""},
		{"host=db sslmode=disable", "", ""},
	} {
		file, strip := sslParam(tc.dsn, "sslrootcert")
		if file != tc.file {
			t.Errorf("sslRootCert(%q) = %q, want %q", tc.dsn, file, tc.file)
			continue
		}
		if file == "" {
			continue
		}
		if got := strip(); got != tc.without {
			t.Errorf("sslRootCert(%q) without it = %q, want %q", tc.dsn, got, tc.without)
		}
	}
}

// The client certificate's parameters come out the same way, and leave
// sslmode alone.
func TestSSLParamClientCert(t *testing.T) {
	dsn := "postgres://app@db/app?sslmode=require&sslcert=/etc/db-client/tls.crt&sslkey=/etc/db-client/tls.key"
	file, strip := sslParam(dsn, "sslcert")
	if file != "/etc/db-client/tls.crt" {
		t.Fatalf("sslcert = %q", file)
	}
	dsn = strip()
	file, strip = sslParam(dsn, "sslkey")
	if file != "/etc/db-client/tls.key" {
		t.Fatalf("sslkey = %q", file)
	}
	if got, want := strip(), "postgres://app@db/app?sslmode=require"; got != want {
		t.Errorf("without sslcert and sslkey = %q, want %q", got, want)
	}
	kv := "host=db sslcert=/etc/c/tls.crt sslkey='/etc/c/tls.key' sslmode=require"
	file, strip = sslParam(kv, "sslkey")
	if got, want := strip(), "host=db sslcert=/etc/c/tls.crt sslmode=require"; file != "/etc/c/tls.key" || got != want {
		t.Errorf("sslkey %q, without it %q; want /etc/c/tls.key, %q", file, got, want)
	}
}

func TestUseMountedTLS(t *testing.T) {
	ca := pgtest.NewCA(t, "test CA")
	cert, key := ca.Issue(t, "db.example.com")
	cfg, err := pgxpool.ParseConfig("postgres://app@db.example.com/app?sslmode=verify-full")
	if err != nil {
		t.Fatal(err)
	}
	if err := useMountedTLS(cfg, mountedTLS{rootCA: ca.CertPEM, cert: cert, key: key}); err != nil {
		t.Fatal(err)
	}
	tc := cfg.ConnConfig.TLSConfig
	if tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.ServerName != "db.example.com" {
		t.Fatalf("TLS config after useMountedTLS: %+v", tc)
	}
	leaf, err := x509.ParseCertificate(tc.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: tc.RootCAs, DNSName: "db.example.com"}); err != nil {
		t.Errorf("the client certificate does not verify against the mounted CA pool: %v", err)
	}

	for name, files := range map[string]mountedTLS{
		"a certificate without its key": {cert: cert},
		"a CA bundle with no PEM":       {rootCA: []byte("not a certificate")},
		"a key that is not the cert's":  {cert: cert, key: []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")},
	} {
		if err := useMountedTLS(cfg, files); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
