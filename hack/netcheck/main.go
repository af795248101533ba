// Command netcheck makes one HTTP GET from inside a pod of the local cluster
// (hack/local-cluster.sh) and says whether it got an answer.
//
//	netcheck [-cacert FILE] [-token FILE] [-status N] [-timeout D] URL
//	netcheck -fail [-timeout D] URL
//
// A TCP connect proves nothing on this machine: something outside it accepts
// any connection, so only a complete HTTP exchange counts. With -cacert the
// server's certificate must verify, which tells our API server apart from
// anything else answering on that address. With -fail the check is inverted:
// it passes only when the request gets no answer, as egress from a pod must.
//
// It prints one line and exits 0 when the check passed, 1 when it did not and
// 2 on bad usage.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("netcheck", flag.ContinueOnError)
	caFile := fs.String("cacert", "", "PEM CA bundle the server's certificate must verify against (default: the system's roots)")
	tokenFile := fs.String("token", "", "file holding a bearer token to send (e.g. the pod's service account token)")
	status := fs.Int("status", 0, "the HTTP status the answer must have (default: any)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long the whole request may take")
	fail := fs.Bool("fail", false, "pass only when the request gets no answer")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "netcheck: want exactly one URL")
		return 2
	}
	url := fs.Arg(0)

	got, err := get(url, *caFile, *tokenFile, *timeout)
	switch {
	case *fail && err != nil:
		fmt.Printf("PASS GET %s: no answer, as required: %v\n", url, err)
		return 0
	case *fail:
		fmt.Printf("FAIL GET %s: answered %s, but must not be reachable\n", url, got)
		return 1
	case err != nil:
		fmt.Printf("FAIL GET %s: %v\n", url, err)
		return 1
	case *status != 0 && got.code != *status:
		fmt.Printf("FAIL GET %s: answered %s, want status %d\n", url, got, *status)
		return 1
	default:
		fmt.Printf("PASS GET %s: answered %s\n", url, got)
		return 0
	}
}

type answer struct {
	code  int
	bytes int64
	start string
}

func (a answer) String() string {
	return fmt.Sprintf("%d, %d bytes: %q", a.code, a.bytes, a.start)
}

func get(url, caFile, tokenFile string, timeout time.Duration) (answer, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return answer{}, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return answer{}, errors.New("no certificate in " + caFile)
		}
		tlsConfig.RootCAs = pool
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return answer{}, err
	}
	if tokenFile != "" {
		token, err := os.ReadFile(tokenFile)
		if err != nil {
			return answer{}, err
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	}
	client := &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{TLSClientConfig: tlsConfig, Proxy: nil},
		// A redirect is an answer too; following it could leave the machine.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	head := make([]byte, 60)
	n, _ := io.ReadFull(resp.Body, head)
	rest, _ := io.Copy(io.Discard, resp.Body)
	return answer{code: resp.StatusCode, bytes: int64(n) + rest, start: string(head[:n])}, nil
}
