package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// tinyBinary is a static Linux executable for runtime.GOARCH, built once by
// TestMain.
var tinyBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "projectionist-image-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code, err := buildTinyBinary(dir)
	if err == nil {
		code = m.Run()
	} else {
		fmt.Fprintln(os.Stderr, err)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func buildTinyBinary(dir string) (int, error) {
	src := map[string]string{
		"go.mod":  "module tiny\n\ngo 1.26\n",
		"main.go": "package main\n\nfunc main() { println(\"tiny\") }\n",
	}
	for name, text := range src {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return 1, err
		}
	}
	tinyBinary = filepath.Join(dir, "tiny")
	build := exec.Command("go", "build", "-trimpath", "-o", tinyBinary, ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH, "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		return 1, fmt.Errorf("building the test binary: %v\n%s", err, out)
	}
	return 0, nil
}

// runOK runs the command and fails the test unless it succeeds.
func runOK(t *testing.T, args ...string) (stdout string) {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(t.Context(), args, &out, &errOut); code != exitOK {
		t.Fatalf("projectionist-image %s: exit %d\n%s", strings.Join(args, " "), code, errOut.String())
	}
	return out.String()
}

// readTar returns a tar's headers in order and its regular files by name.
func readTar(t *testing.T, r io.Reader) ([]*tar.Header, map[string][]byte) {
	t.Helper()
	tr := tar.NewReader(r)
	var hdrs []*tar.Header
	files := map[string][]byte{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return hdrs, files
		}
		if err != nil {
			t.Fatalf("reading tar: %v", err)
		}
		hdrs = append(hdrs, hdr)
		if hdr.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatalf("reading %s: %v", hdr.Name, err)
			}
			files[hdr.Name] = b
		}
	}
}

func readArchive(t *testing.T, file string) ([]*tar.Header, map[string][]byte) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return readTar(t, f)
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func decode(t *testing.T, what string, b []byte) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s is not a JSON object: %v\n%s", what, err, b)
	}
	return v
}

// blob follows a descriptor's digest to its blob, which must exist.
func blob(t *testing.T, files map[string][]byte, what string, desc any) (digest string, data []byte) {
	t.Helper()
	m, _ := desc.(map[string]any)
	digest, _ = m["digest"].(string)
	data, ok := files["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
	if !ok {
		t.Fatalf("the %s descriptor %v names no blob in the archive", what, desc)
	}
	return digest, data
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("the layer is not gzip'ed: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzipping the layer: %v", err)
	}
	return out
}

// layerFile is what the test checks of each layer entry.
type layerFile struct {
	Name     string
	Type     byte
	Mode     int64
	UID, GID int
	Size     int64
}

func listLayer(t *testing.T, layerTar []byte) ([]layerFile, map[string][]byte) {
	t.Helper()
	hdrs, files := readTar(t, bytes.NewReader(layerTar))
	var list []layerFile
	for _, h := range hdrs {
		if h.ModTime.Unix() != 0 {
			t.Errorf("layer entry %s has mtime %v, want the epoch", h.Name, h.ModTime)
		}
		list = append(list, layerFile{Name: h.Name, Type: h.Typeflag, Mode: h.Mode, UID: h.Uid, GID: h.Gid, Size: h.Size})
	}
	return list, files
}

// TestArchiveLayout follows the archive the way containerd does, from
// index.json to the manifest to the config and layer, and the way Docker
// does, from manifest.json, and checks every digest, size and field on the
// way.
func TestArchiveLayout(t *testing.T) {
	const name = "docker.io/projectionist/projectionist:dev"
	out := filepath.Join(t.TempDir(), "image.tar")
	stdout := runOK(t, "-binary", tinyBinary, "-name", name, "-out", out)
	hdrs, files := readArchive(t, out)

	// The tar: two directories, the blobs sorted, then the three files,
	// owned by root, stamped with the epoch; every blob named by its digest.
	var names []string
	for _, h := range hdrs {
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || h.ModTime.Unix() != 0 {
			t.Errorf("archive entry %s: owner %d:%d, mtime %v; want 0:0 and the epoch", h.Name, h.Uid, h.Gid, h.ModTime)
		}
	}
	if len(names) != 8 {
		t.Fatalf("archive entries = %q, want blobs/, blobs/sha256/, three blobs, index.json, manifest.json, oci-layout", names)
	}
	if diff := cmp.Diff([]string{"blobs/", "blobs/sha256/"}, names[:2]); diff != "" {
		t.Errorf("first archive entries (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"index.json", "manifest.json", "oci-layout"}, names[5:]); diff != "" {
		t.Errorf("last archive entries (-want +got):\n%s", diff)
	}
	for i, n := range names[2:5] {
		if !strings.HasPrefix(n, "blobs/sha256/") || (i > 0 && n < names[1+i]) {
			t.Errorf("archive entries %q: want the three blobs sorted after the directories", names)
		}
		if got := digestOf(files[n]); got != "sha256:"+strings.TrimPrefix(n, "blobs/sha256/") {
			t.Errorf("blob %s has digest %s", n, got)
		}
	}

	if diff := cmp.Diff(map[string]any{"imageLayoutVersion": "1.0.0"}, decode(t, "oci-layout", files["oci-layout"])); diff != "" {
		t.Errorf("oci-layout (-want +got):\n%s", diff)
	}

	idx := decode(t, "index.json", files["index.json"])
	manifests, _ := idx["manifests"].([]any)
	if len(manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1:\n%s", len(manifests), files["index.json"])
	}
	manifestDigest, manifestBlob := blob(t, files, "manifest", manifests[0])
	wantIndex := map[string]any{
		"schemaVersion": 2.0,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json",
			"digest":    manifestDigest,
			"size":      float64(len(manifestBlob)),
			"annotations": map[string]any{
				"io.containerd.image.name":          name,
				"org.opencontainers.image.ref.name": "dev",
			},
			"platform": map[string]any{"architecture": runtime.GOARCH, "os": "linux"},
		}},
	}
	if diff := cmp.Diff(wantIndex, idx); diff != "" {
		t.Errorf("index.json (-want +got):\n%s", diff)
	}

	mfst := decode(t, "the manifest", manifestBlob)
	configDigest, configBlob := blob(t, files, "config", mfst["config"])
	layers, _ := mfst["layers"].([]any)
	if len(layers) != 1 {
		t.Fatalf("the manifest has %d layers, want 1:\n%s", len(layers), manifestBlob)
	}
	layerDigest, layerBlob := blob(t, files, "layer", layers[0])
	wantManifest := map[string]any{
		"schemaVersion": 2.0,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{
			"mediaType": "application/vnd.oci.image.config.v1+json",
			"digest":    configDigest,
			"size":      float64(len(configBlob)),
		},
		"layers": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
			"digest":    layerDigest,
			"size":      float64(len(layerBlob)),
		}},
	}
	if diff := cmp.Diff(wantManifest, mfst); diff != "" {
		t.Errorf("the manifest (-want +got):\n%s", diff)
	}

	layerTar := gunzip(t, layerBlob)
	wantConfig := map[string]any{
		"created":      "1970-01-01T00:00:00Z",
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config": map[string]any{
			"User":       "65532:65532",
			"Env":        []any{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			"Entrypoint": []any{"/projectionist"},
			"WorkingDir": "/",
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []any{digestOf(layerTar)}},
		"history": []any{map[string]any{
			"created":    "1970-01-01T00:00:00Z",
			"created_by": "projectionist-image: COPY tiny /projectionist",
		}},
	}
	if diff := cmp.Diff(wantConfig, decode(t, "the config", configBlob)); diff != "" {
		t.Errorf("the config (-want +got):\n%s", diff)
	}

	var docker []map[string]any
	if err := json.Unmarshal(files["manifest.json"], &docker); err != nil {
		t.Fatalf("manifest.json: %v\n%s", err, files["manifest.json"])
	}
	wantDocker := []map[string]any{{
		"Config":   "blobs/sha256/" + strings.TrimPrefix(configDigest, "sha256:"),
		"RepoTags": []any{name},
		"Layers":   []any{"blobs/sha256/" + strings.TrimPrefix(layerDigest, "sha256:")},
	}}
	if diff := cmp.Diff(wantDocker, docker); diff != "" {
		t.Errorf("manifest.json (-want +got):\n%s", diff)
	}

	binary, err := os.ReadFile(tinyBinary)
	if err != nil {
		t.Fatal(err)
	}
	wantPasswd := "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	wantGroup := "root:x:0:\nnonroot:x:65532:\n"
	list, layerFiles := listLayer(t, layerTar)
	wantList := []layerFile{
		{Name: "etc/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "etc/group", Type: tar.TypeReg, Mode: 0o644, Size: int64(len(wantGroup))},
		{Name: "etc/passwd", Type: tar.TypeReg, Mode: 0o644, Size: int64(len(wantPasswd))},
		{Name: "home/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "home/nonroot/", Type: tar.TypeDir, Mode: 0o700, UID: 65532, GID: 65532},
		{Name: "projectionist", Type: tar.TypeReg, Mode: 0o755, Size: int64(len(binary))},
		{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777},
	}
	if diff := cmp.Diff(wantList, list); diff != "" {
		t.Errorf("the layer's entries (-want +got):\n%s", diff)
	}
	if !bytes.Equal(layerFiles["projectionist"], binary) {
		t.Errorf("/projectionist in the layer differs from the binary")
	}
	if got := string(layerFiles["etc/passwd"]); got != wantPasswd {
		t.Errorf("/etc/passwd = %q, want %q", got, wantPasswd)
	}
	if got := string(layerFiles["etc/group"]); got != wantGroup {
		t.Errorf("/etc/group = %q, want %q", got, wantGroup)
	}

	for _, want := range []string{name, manifestDigest, out} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout %q does not mention %s", stdout, want)
		}
	}
}

// TestReproducible: the same inputs give the same bytes, and the time comes
// from SOURCE_DATE_EPOCH alone.
func TestReproducible(t *testing.T) {
	dir := t.TempDir()
	build := func(out string) []byte {
		t.Helper()
		runOK(t, "-binary", tinyBinary, "-name", "docker.io/projectionist/projectionist:dev", "-out", filepath.Join(dir, out))
		b, err := os.ReadFile(filepath.Join(dir, out))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	first, second := build("first.tar"), build("second.tar")
	if !bytes.Equal(first, second) {
		t.Errorf("two runs on the same binary wrote different archives (%s, %s)", digestOf(first), digestOf(second))
	}

	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	dated, datedAgain := build("dated.tar"), build("dated-again.tar")
	if !bytes.Equal(dated, datedAgain) {
		t.Errorf("two runs with SOURCE_DATE_EPOCH set wrote different archives")
	}
	if bytes.Equal(dated, first) {
		t.Errorf("SOURCE_DATE_EPOCH did not change the archive")
	}
	hdrs, files := readTar(t, bytes.NewReader(dated))
	for _, h := range hdrs {
		if h.ModTime.Unix() != 1700000000 {
			t.Errorf("archive entry %s has mtime %v, want SOURCE_DATE_EPOCH", h.Name, h.ModTime)
		}
	}
	var docker []struct{ Config string }
	if err := json.Unmarshal(files["manifest.json"], &docker); err != nil || len(docker) != 1 {
		t.Fatalf("manifest.json: %v\n%s", err, files["manifest.json"])
	}
	if got := decode(t, "the config", files[docker[0].Config])["created"]; got != "2023-11-14T22:13:20Z" {
		t.Errorf("config created = %v, want 2023-11-14T22:13:20Z", got)
	}
}

// TestPauseLikeImage covers the flags `make pause-image` and -extra use.
func TestPauseLikeImage(t *testing.T) {
	dir := t.TempDir()
	certs := writeFile(t, dir, "ca.pem", "-----BEGIN CERTIFICATE-----\n", 0o640)
	if err := os.Chmod(certs, 0o640); err != nil { // whatever the umask
		t.Fatal(err)
	}
	out := filepath.Join(dir, "pause.tar")
	runOK(t, "-binary", tinyBinary, "-name", "registry.k8s.io/pause:3.10", "-out", out,
		"-path", "/pause", "-user", "65535", "-entrypoint", `["/pause", "-v"]`,
		"-extra", certs+":/etc/ssl/certs/ca-certificates.crt")
	_, files := readArchive(t, out)

	var docker []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &docker); err != nil || len(docker) != 1 || len(docker[0].Layers) != 1 {
		t.Fatalf("manifest.json: %v\n%s", err, files["manifest.json"])
	}
	config := decode(t, "the config", files[docker[0].Config])["config"]
	wantConfig := map[string]any{
		"User":       "65535",
		"Env":        []any{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		"Entrypoint": []any{"/pause", "-v"},
		"WorkingDir": "/",
	}
	if diff := cmp.Diff(wantConfig, config); diff != "" {
		t.Errorf("the config's config (-want +got):\n%s", diff)
	}

	binInfo, err := os.Stat(tinyBinary)
	if err != nil {
		t.Fatal(err)
	}
	list, layerFiles := listLayer(t, gunzip(t, files[docker[0].Layers[0]]))
	var got []layerFile
	for _, f := range list {
		if strings.HasPrefix(f.Name, "etc/ssl") || f.Name == "pause" || f.Name == "home/nonroot/" {
			got = append(got, f)
		}
	}
	want := []layerFile{
		{Name: "etc/ssl/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "etc/ssl/certs/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "etc/ssl/certs/ca-certificates.crt", Type: tar.TypeReg, Mode: 0o640, Size: 28},
		{Name: "home/nonroot/", Type: tar.TypeDir, Mode: 0o700, UID: 65535, GID: 65535},
		{Name: "pause", Type: tar.TypeReg, Mode: 0o755, Size: binInfo.Size()},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the layer's entries (-want +got):\n%s\nall entries: %+v", diff, list)
	}
	if passwd := string(layerFiles["etc/passwd"]); !strings.Contains(passwd, "nonroot:x:65535:65535:") {
		t.Errorf("/etc/passwd does not name user 65535:\n%s", passwd)
	}
}

func TestRejects(t *testing.T) {
	dir := t.TempDir()
	text := writeFile(t, dir, "script.sh", "#!/bin/sh\n", 0o755)
	otherArch := "arm64"
	if runtime.GOARCH == "arm64" {
		otherArch = "amd64"
	}
	const good = "docker.io/projectionist/projectionist:dev"

	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"short name", []string{"-binary", tinyBinary, "-name", "projectionist:dev"}, exitUsage,
			`-name "projectionist:dev" is not fully qualified: it must start with a registry host, like "docker.io/library/projectionist:dev"`},
		{"name without registry", []string{"-binary", tinyBinary, "-name", "projectionist/projectionist:dev"}, exitUsage,
			`like "docker.io/projectionist/projectionist:dev"`},
		{"no tag", []string{"-binary", tinyBinary, "-name", "docker.io/projectionist/projectionist"}, exitUsage,
			`has no tag`},
		{"digest instead of tag", []string{"-binary", tinyBinary, "-name", "docker.io/projectionist/projectionist@sha256:" + strings.Repeat("0", 64)}, exitUsage,
			`has no tag`},
		{"uppercase repository", []string{"-binary", tinyBinary, "-name", "docker.io/Projectionist/projectionist:dev"}, exitUsage,
			`not a valid image reference`},
		{"docker hub without namespace", []string{"-binary", tinyBinary, "-name", "docker.io/projectionist:dev"}, exitUsage,
			`write "docker.io/library/projectionist:dev"`},
		{"missing flags", []string{"-name", good}, exitUsage, `missing -binary, -out`},
		{"user name", []string{"-binary", tinyBinary, "-name", good, "-user", "nonroot"}, exitUsage, `must be a numeric UID or UID:GID`},
		{"relative path", []string{"-binary", tinyBinary, "-name", good, "-path", "projectionist"}, exitUsage, `must be an absolute path`},
		{"bad extra", []string{"-binary", tinyBinary, "-name", good, "-extra", "nocolon"}, exitUsage, `want SRC:DST`},
		{"stray argument", []string{"-binary", tinyBinary, "-name", good, "oops"}, exitUsage, `unexpected arguments`},
		{"not an executable", []string{"-binary", text, "-name", good}, exitError, `is not a Linux executable (ELF)`},
		{"other architecture", []string{"-binary", tinyBinary, "-name", good, "-arch", otherArch}, exitError, `not for -arch ` + otherArch},
		{"extra over the binary", []string{"-binary", tinyBinary, "-name", good, "-extra", text + ":/projectionist"}, exitError, `/projectionist is put in the image twice`},
		{"extra under the binary", []string{"-binary", tinyBinary, "-name", good, "-extra", text + ":/projectionist/x"}, exitError, `/projectionist is a file in the image`},
		{"bad base", []string{"-binary", tinyBinary, "-name", good, "-base", "Not A Reference"}, exitError, `-base "Not A Reference" is neither a file nor an image reference`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "image.tar")
			args := tc.args
			if tc.name != "missing flags" {
				args = append([]string{"-out", out}, args...)
			}
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), args, &stdout, &stderr)
			if code != tc.wantCode || !strings.Contains(stderr.String(), tc.wantErr) {
				t.Errorf("projectionist-image %s: exit %d, stderr %q; want exit %d and %q", strings.Join(args, " "), code, stderr.String(), tc.wantCode, tc.wantErr)
			}
			if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 0 {
				t.Errorf("a failed run left files behind: %v", entries)
			}
		})
	}
}

func TestCheckNameAccepts(t *testing.T) {
	for name, wantTag := range map[string]string{
		"docker.io/projectionist/projectionist:v0.3.0-2-gabcdef0-dirty": "v0.3.0-2-gabcdef0-dirty",
		"docker.io/library/projectionist:dev":                           "dev",
		"registry.k8s.io/pause:3.10":                                    "3.10",
		"localhost/projectionist:dev":                                   "dev",
		"localhost:5000/team/projectionist:1.2.3":                       "1.2.3",
		"ghcr.io/projectionist/projectionist:latest":                    "latest",
	} {
		if tag, err := checkName(name); err != nil || tag != wantTag {
			t.Errorf("checkName(%q) = %q, %v; want %q", name, tag, err, wantTag)
		}
	}
}

// TestHelp: -h exits 0 and documents every flag, with examples.
func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"-h"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("-h: exit %d, want 0\n%s", code, stderr.String())
	}
	help := stderr.String()
	for _, want := range []string{
		"Usage: projectionist-image", "Examples:", "go run github.com/projectionist/projectionist/cmd/projectionist-image",
		"kind load image-archive", "SOURCE_DATE_EPOCH", "Exit status",
		"-binary", "-path", "-name", "-out", "-push", "-base", "-entrypoint", "-user", "-arch", "-os", "-extra",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("-h does not mention %q:\n%s", want, help)
		}
	}
}

// writeFile writes content to dir/name with mode (less the umask) and
// returns its path.
func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return path
}
