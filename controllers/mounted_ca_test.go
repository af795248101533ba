package controllers

import "testing"

func TestSSLRootCert(t *testing.T) {
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
		file, strip := sslRootCert(tc.dsn)
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
