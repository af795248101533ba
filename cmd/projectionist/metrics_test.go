package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/projectionist/projectionist/internal/kubetest"
	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/internal/proctest"
)

// The operator's /metrics is served the way kubebuilder v4 projects serve
// theirs: HTTPS, and only to a bearer token the API server authenticates
// and authorizes for get on /metrics. The operator runs as a ServiceAccount
// holding exactly the ClusterRoles of config/rbac (manager-role and
// metrics-auth-role), so the hand-written metrics-auth rules are proven
// sufficient; scrapers present real ServiceAccount tokens (TokenRequest).
// One operator uses the default self-signed certificate, another one
// from --metrics-cert-dir, verified against its CA.
func TestOperatorSecureMetrics(t *testing.T) {
	ctx := t.Context()
	env := kubetest.New(t, kubetest.Options{})
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	const ns = "default"
	token := func(t *testing.T, sa string, roles ...string) string {
		t.Helper()
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, role := range roles {
			crb := &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: sa + "-" + role},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}},
			}
			if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	// The ClusterRoles of config/rbac, under their own names.
	for _, file := range []string{"role.yaml", "metrics_auth_role.yaml", "metrics_reader_role.yaml"} {
		var role rbacv1.ClusterRole
		b, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", file))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.UnmarshalStrict(b, &role); err != nil {
			t.Fatalf("config/rbac/%s: %v", file, err)
		}
		role.ObjectMeta = metav1.ObjectMeta{Name: role.Name}
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	operatorToken := token(t, "operator", "manager-role", "metrics-auth-role")
	readerToken := token(t, "prometheus", "metrics-reader")
	strangerToken := token(t, "stranger")

	// A kubeconfig with the operator's token instead of the admin's
	// certificate.
	kubeconfig := filepath.Join(t.TempDir(), "operator.kubeconfig")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	kc.AuthInfos["operator"] = &clientcmdapi.AuthInfo{Token: operatorToken}
	kc.Contexts["operator"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "operator"}
	kc.CurrentContext = "operator"
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}

	// The certificate of the second operator, from a CA of the test's.
	ca := pgtest.NewCA(t, "projectionist metrics test CA")
	certDir := t.TempDir()
	certPEM, keyPEM := ca.Issue(t, "127.0.0.1")
	if err := os.WriteFile(filepath.Join(certDir, "tls.crt"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certDir, "tls.key"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	// A directory without the files is an error, not a silent fallback to
	// a self-signed certificate.
	empty := t.TempDir()
	if r := run(t, nil, "operator", "--kubeconfig", kubeconfig, "--metrics-cert-dir", empty, "--worker-image", "example.invalid/worker:1"); r.code != 1 ||
		!strings.Contains(r.stderr, "metrics certificate directory: stat "+filepath.Join(empty, "tls.crt")) {
		t.Errorf("--metrics-cert-dir of an empty directory: want exit 1 naming tls.crt, got\n%s", r)
	}

	start := func(name string, extra ...string) string {
		t.Helper()
		metricsPort, err := proctest.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		probePort, err := proctest.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", metricsPort)
		// --metrics-secure is the default.
		args := append([]string{"operator", "--kubeconfig", kubeconfig, "--metrics-addr", addr,
			"--health-probe-addr", fmt.Sprintf("127.0.0.1:%d", probePort), "--worker-image", "example.invalid/worker:1"}, extra...)
		startProcess(t, name, nil, args...)
		return addr
	}
	selfSigned := start("operator-self-signed")
	provided := start("operator-cert-dir", "--metrics-cert-dir", certDir)

	// A client that would take HTTP/2 if offered.
	insecure := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	verifying := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}

	type response struct {
		code  int
		proto string
		body  string
		cert  *x509.Certificate
	}
	scrape := func(c *http.Client, url, token string) (response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return response{}, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			return response{}, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		r := response{code: resp.StatusCode, proto: resp.Proto, body: string(b)}
		if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
			r.cert = resp.TLS.PeerCertificates[0]
		}
		return r, err
	}
	// Up once a request without a token gets an answer.
	for _, addr := range []string{selfSigned, provided} {
		proctest.Eventually(t, time.Minute, 100*time.Millisecond, "the operator's metrics server on "+addr, func() error {
			_, err := scrape(insecure, "https://"+addr+"/metrics", "")
			return err
		})
	}

	url := "https://" + selfSigned + "/metrics"
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"no token", "", http.StatusUnauthorized},
		// controller-runtime's filter answers a TokenReview that rejects the
		// token as an error: 500, and an ERROR line in the operator's log
		// for each such scrape. Still no metrics.
		{"a token the API server does not know", "not-a-token", http.StatusInternalServerError},
		{"a ServiceAccount without get on /metrics", strangerToken, http.StatusForbidden},
		{"the operator's own ServiceAccount (no get on /metrics either)", operatorToken, http.StatusForbidden},
	} {
		r, err := scrape(insecure, url, tc.token)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.code != tc.want {
			t.Errorf("%s: HTTP %d, want %d: %s", tc.name, r.code, tc.want, r.body)
		}
		if strings.Contains(r.body, "controller_runtime_") {
			t.Errorf("%s: HTTP %d with metrics in the body", tc.name, r.code)
		}
	}

	// A ServiceAccount bound to metrics-reader gets the metrics, over
	// HTTP/1.1 (HTTP/2 is off), once the controller has registered its own.
	const metric = "controller_runtime_reconcile_total"
	var got response
	proctest.Eventually(t, time.Minute, 200*time.Millisecond, "the metrics-reader to scrape "+metric, func() error {
		r, err := scrape(insecure, url, readerToken)
		if err != nil {
			return err
		}
		got = r
		if r.code != http.StatusOK || !strings.Contains(r.body, metric) {
			return fmt.Errorf("HTTP %d, want 200 with %s: %.300s", r.code, metric, r.body)
		}
		return nil
	})
	if got.proto != "HTTP/1.1" {
		t.Errorf("protocol %s, want HTTP/1.1", got.proto)
	}
	if got.cert == nil {
		t.Error("no server certificate")
	} else {
		t.Logf("self-signed certificate: subject %q, issuer %q, DNS names %v", got.cert.Subject, got.cert.Issuer, got.cert.DNSNames)
	}

	// Plain HTTP to the HTTPS port gets no metrics.
	if r, err := scrape(&http.Client{Timeout: 10 * time.Second}, "http://"+selfSigned+"/metrics", readerToken); err == nil && r.code == http.StatusOK {
		t.Errorf("plain HTTP: HTTP %d, want no metrics", r.code)
	}

	// --metrics-cert-dir: the certificate verifies against the test's CA;
	// without a token, still 401.
	provURL := "https://" + provided + "/metrics"
	proctest.Eventually(t, time.Minute, 200*time.Millisecond, "the metrics-reader to scrape the operator with a provided certificate", func() error {
		r, err := scrape(verifying, provURL, readerToken)
		if err != nil {
			return err
		}
		if r.code != http.StatusOK || !strings.Contains(r.body, "controller_runtime_") {
			return fmt.Errorf("HTTP %d, want 200 with controller-runtime's metrics: %.300s", r.code, r.body)
		}
		return nil
	})
	if r, err := scrape(verifying, provURL, ""); err != nil || r.code != http.StatusUnauthorized {
		t.Errorf("provided certificate, no token: HTTP %d (%v), want 401", r.code, err)
	}
	// The self-signed one does not verify against it.
	var unknownAuthority x509.UnknownAuthorityError
	if _, err := scrape(verifying, url, readerToken); !errors.As(err, &unknownAuthority) {
		t.Errorf("self-signed certificate against the test CA: %v, want x509.UnknownAuthorityError", err)
	}
}
