package pgtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// CA is a certificate authority made for one test: an ECDSA P-256 key and
// a self-signed certificate, valid for a day.
type CA struct {
	// CertFile holds the CA's certificate (PEM), for sslrootcert= or a
	// bundle named by SSL_CERT_FILE. It is removed when the test ends.
	CertFile string
	// CertPEM is the certificate, PEM-encoded.
	CertPEM []byte

	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA makes a certificate authority whose certificate names commonName.
func NewCA(tb testing.TB, commonName string) *CA {
	tb.Helper()
	key, tmpl := newKeyAndTemplate(tb, pkix.Name{CommonName: commonName, Organization: []string{"projectionist tests"}})
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	tmpl.BasicConstraintsValid, tmpl.IsCA, tmpl.MaxPathLenZero = true, true, true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	ca := &CA{CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert: cert, key: key}
	ca.CertFile = filepath.Join(tb.TempDir(), "ca.crt")
	if err := os.WriteFile(ca.CertFile, ca.CertPEM, 0o644); err != nil {
		tb.Fatal(err)
	}
	return ca
}

// newKeyAndTemplate returns a new P-256 key and a certificate template for
// subject, with a fresh serial number, valid from an hour ago for a day.
func newKeyAndTemplate(tb testing.TB, subject pkix.Name) (*ecdsa.PrivateKey, *x509.Certificate) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	return key, &x509.Certificate{
		SerialNumber: serialNumber(tb),
		Subject:      subject,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
	}
}

// Issue returns a server certificate for hosts (DNS names and IP
// addresses) signed by ca, and its private key, both PEM-encoded.
func (ca *CA) Issue(tb testing.TB, hosts ...string) (certPEM, keyPEM []byte) {
	tb.Helper()
	key, tmpl := newKeyAndTemplate(tb, pkix.Name{CommonName: hosts[0]})
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

func serialNumber(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// TLSServer is a PostgreSQL server of its own, apart from the one
// [NewDatabase] uses, that takes TCP connections only over TLS and only
// with a password (SCRAM): a client that connects at all used TLS.
type TLSServer struct {
	// CA signed the server's certificate, which names 127.0.0.1, ::1 and
	// localhost.
	CA *CA
	// Host and Port are where it listens (TCP).
	Host string
	Port int
	// User and Password log in as a superuser.
	User, Password string

	// admin reaches the maintenance database over the Unix socket, which
	// needs neither TLS nor a password.
	admin string
}

// StartTLS starts a TLS-only PostgreSQL server for this test (initdb, a
// free loopback port, ssl=on with a certificate from a new [CA]) and stops
// it, removing its data, when the test ends. It takes a few seconds; share
// one among a test's subtests, each with its own [TLSServer.NewDatabase].
// Unlike [NewDatabase], it always starts a server, so it needs the
// PostgreSQL server binaries even when PROJECTIONIST_TEST_DATABASE_URL is
// set (and fails the test without them).
func StartTLS(tb testing.TB) *TLSServer {
	tb.Helper()
	bin, err := findBin()
	if err != nil {
		tb.Fatalf("pgtest.StartTLS needs the PostgreSQL server binaries, even with %s set: %v", EnvDatabaseURL, err)
	}
	cred, err := credential()
	if err != nil {
		tb.Fatalf("pgtest.StartTLS: %v", err)
	}
	dir, err := os.MkdirTemp("", "projectionist-pg-tls-")
	if err != nil {
		tb.Fatal(err)
	}
	s := &server{dir: dir, bin: bin, cred: cred}
	tb.Cleanup(s.stop)

	ca := NewCA(tb, "pgtest CA")
	certPEM, keyPEM := ca.Issue(tb, "127.0.0.1", "::1", "localhost")
	password := randomHex(tb, 16)
	// PostgreSQL refuses a key file that others may read, or that is not
	// owned by the user it runs as (or root).
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"server.crt", certPEM, 0o644},
		{"server.key", keyPEM, 0o600},
		{"pwfile", []byte(password + "\n"), 0o600},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			tb.Fatal(err)
		}
		if err := chown(p, cred); err != nil {
			tb.Fatal(err)
		}
	}
	if err := chown(dir, cred); err != nil {
		tb.Fatal(err)
	}

	data := filepath.Join(dir, "data")
	if err := initdb(bin, cred, data, "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile="+filepath.Join(dir, "pwfile")); err != nil {
		tb.Fatalf("pgtest.StartTLS: %v", err)
	}
	// TCP only with TLS (hostssl) and a password; no line matches a
	// connection without TLS, so the server refuses it.
	hba := "local all all trust\n" +
		"hostssl all all 127.0.0.1/32 scram-sha-256\n" +
		"hostssl all all ::1/128 scram-sha-256\n"
	hbaFile := filepath.Join(data, "pg_hba.conf")
	if err := os.WriteFile(hbaFile, []byte(hba), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := chown(hbaFile, cred); err != nil {
		tb.Fatal(err)
	}
	if s.port, err = freePort(); err != nil {
		tb.Fatal(err)
	}
	s.settings = []string{
		"ssl=on",
		"ssl_cert_file=" + filepath.Join(dir, "server.crt"),
		"ssl_key_file=" + filepath.Join(dir, "server.key"),
		// A few clients, not the shared server's hundreds.
		"max_connections=50",
		"shared_buffers=32MB",
	}
	s.adminURL = fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", dir, s.port)
	if err := s.launch(); err != nil {
		tb.Fatalf("pgtest.StartTLS: %v", err)
	}
	return &TLSServer{CA: ca, Host: "127.0.0.1", Port: s.port, User: "postgres", Password: password, admin: s.adminURL}
}

// URL returns a DSN (URL form) for database dbname on s, with the user and
// password, and query appended as the URL's query string (such as
// "sslmode=verify-full&sslrootcert=/path/ca.crt"; values are taken as
// written).
func (s *TLSServer) URL(dbname, query string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(s.User, s.Password),
		Host:     net.JoinHostPort(s.Host, fmt.Sprint(s.Port)),
		Path:     "/" + dbname,
		RawQuery: query,
	}
	return u.String()
}

// NewDatabase creates an empty database on s for this test and returns its
// name; it is dropped when the test ends.
func (s *TLSServer) NewDatabase(tb testing.TB) string {
	tb.Helper()
	_, name, err := createDatabase(s.admin)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := dropDatabase(s.admin, name); err != nil {
			tb.Log(err)
		}
	})
	return name
}

func randomHex(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// chown gives path to the user postgres runs as, if that is not this
// process's.
func chown(path string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	if err := os.Chown(path, int(cred.Uid), int(cred.Gid)); err != nil {
		return fmt.Errorf("chown %s to postgres: %w", path, err)
	}
	return nil
}
