package main

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// systemCAs is where Debian's ca-certificates keeps the bundle, and where
// the stock image carries it: the path Go's crypto/x509 reads on Linux.
const systemCAs = "/etc/ssl/certs/ca-certificates.crt"

// makeToolArgs returns the flags a make target passes to this tool, as
// `make -n` prints them, with -binary and -out replaced by binary and out.
func makeToolArgs(t *testing.T, target, binary, out string, vars ...string) []string {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("no make on this machine: the test runs make -n image")
	}
	cmd := exec.Command("make", append([]string{"--no-print-directory", "-n", target, "LOCALBIN=" + t.TempDir()}, vars...)...)
	cmd.Dir = filepath.Join("..", "..")
	script, err := cmd.Output()
	if err != nil {
		t.Fatalf("make -n %s: %v", target, err)
	}
	joined := strings.ReplaceAll(string(script), "\\\n", " ")
	for line := range strings.Lines(joined) {
		_, after, ok := strings.Cut(line, " run ./cmd/projectionist-image ")
		if !ok {
			continue
		}
		args := strings.Fields(after)
		for i := 0; i+1 < len(args); i++ {
			switch args[i] {
			case "-binary":
				args[i+1] = binary
			case "-out":
				args[i+1] = out
			}
		}
		return args
	}
	t.Fatalf("make -n %s runs no ./cmd/projectionist-image:\n%s", target, script)
	return nil
}

// imageLayer returns the entries and files of the only layer of the
// archive's image.
func imageLayer(t *testing.T, archive string) ([]layerFile, map[string][]byte) {
	t.Helper()
	_, files := readArchive(t, archive)
	var docker []struct{ Layers []string }
	if err := json.Unmarshal(files["manifest.json"], &docker); err != nil || len(docker) != 1 || len(docker[0].Layers) != 1 {
		t.Fatalf("manifest.json: %v\n%s", err, files["manifest.json"])
	}
	return listLayer(t, gunzip(t, files[docker[0].Layers[0]]))
}

// TestMakeImageCACertificates runs the tool with the flags of `make
// image` (on the test binary): the layer carries this machine's CA bundle
// at /etc/ssl/certs/ca-certificates.crt, byte for byte, and it parses as
// certificates. The pause image carries none.
func TestMakeImageCACertificates(t *testing.T) {
	want, err := os.ReadFile(systemCAs)
	if err != nil {
		t.Fatalf("no CA bundle on this machine (apt-get install ca-certificates): %v", err)
	}
	out := filepath.Join(t.TempDir(), "projectionist.tar")
	runOK(t, makeToolArgs(t, "image", tinyBinary, out, "VERSION=test")...)
	list, files := imageLayer(t, out)
	got, ok := files["etc/ssl/certs/ca-certificates.crt"]
	if !ok {
		t.Fatalf("the stock image has no /etc/ssl/certs/ca-certificates.crt; its layer: %+v", list)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("/etc/ssl/certs/ca-certificates.crt in the image differs from %s", systemCAs)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(got) {
		t.Errorf("/etc/ssl/certs/ca-certificates.crt in the image holds no certificate")
	}
	for _, f := range list {
		if f.Name == "etc/ssl/certs/ca-certificates.crt" && (f.Mode != 0o644 || f.UID != 0 || f.GID != 0) {
			t.Errorf("/etc/ssl/certs/ca-certificates.crt has mode %o and owner %d:%d, want 644 and 0:0", f.Mode, f.UID, f.GID)
		}
	}

	pause := filepath.Join(t.TempDir(), "pause.tar")
	runOK(t, makeToolArgs(t, "pause-image", tinyBinary, pause)...)
	list, _ = imageLayer(t, pause)
	for _, f := range list {
		if strings.HasPrefix(f.Name, "etc/ssl") {
			t.Errorf("the pause image carries %s", f.Name)
		}
	}
}

// TestMakeImageWithoutCACertificates: without the bundle, make image fails
// at once and says which package to install.
func TestMakeImageWithoutCACertificates(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("no make on this machine: the test runs make -n image")
	}
	bin := t.TempDir()
	cmd := exec.Command("make", "--no-print-directory", "image", "VERSION=test", "LOCALBIN="+bin, "CA_CERTS="+filepath.Join(bin, "none.crt"))
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "apt-get install ca-certificates") {
		t.Errorf("make image without CA certificates: %v, want a failure saying apt-get install ca-certificates:\n%s", err, out)
	}
	if entries, _ := os.ReadDir(bin); len(entries) != 0 {
		t.Errorf("make image built %v before failing", entries)
	}
}
