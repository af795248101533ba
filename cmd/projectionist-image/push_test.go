package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// startRegistry serves go-containerregistry's in-memory registry on
// loopback (plain HTTP, which the tool speaks to loopback hosts) and
// returns its host:port. No credentials leak in from the machine's
// ~/.docker.
func startRegistry(t *testing.T) string {
	t.Helper()
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// pull reads ref back from the registry: the manifest's digest, the
// config as JSON, and each layer's compressed bytes.
func pull(t *testing.T, ref string) (digest string, config map[string]any, layers [][]byte) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, b)
	}
	return d.String(), decode(t, "the pulled config", raw), layers
}

// archiveImage reads the archive's one image the way containerd does,
// from index.json: the manifest's digest, the config and the layers'
// blobs.
func archiveImage(t *testing.T, file string) (digest string, config map[string]any, layers [][]byte) {
	t.Helper()
	_, files := readArchive(t, file)
	var idx struct{ Manifests []map[string]any }
	if err := json.Unmarshal(files["index.json"], &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json: %v\n%s", err, files["index.json"])
	}
	digest, manifestBlob := blob(t, files, "manifest", idx.Manifests[0])
	mfst := decode(t, "the manifest", manifestBlob)
	_, configBlob := blob(t, files, "config", mfst["config"])
	list, _ := mfst["layers"].([]any)
	for _, l := range list {
		_, b := blob(t, files, "layer", l)
		layers = append(layers, b)
	}
	return digest, decode(t, "the config", configBlob), layers
}

// TestPush pushes to an in-memory registry, with and without an archive,
// and pulls the image back: the same manifest, config and layer as the
// archive holds, under the tag -name gives.
func TestPush(t *testing.T) {
	host := startRegistry(t)
	ref := host + "/acme/worker:1"
	out := filepath.Join(t.TempDir(), "worker.tar")
	stdout := runOK(t, "-binary", tinyBinary, "-name", ref, "-out", out, "-push")

	wantDigest, wantConfig, wantLayers := archiveImage(t, out)
	digest, config, layers := pull(t, ref)
	if digest != wantDigest {
		t.Errorf("pushed manifest %s, the archive's %s", digest, wantDigest)
	}
	if !strings.Contains(stdout, "pushed:   "+host+"/acme/worker@"+digest) {
		t.Errorf("stdout %q does not say what was pushed", stdout)
	}
	if diff := cmp.Diff(wantConfig, config); diff != "" {
		t.Errorf("the pulled config differs from the archive's (-archive +pulled):\n%s", diff)
	}
	wantImageConfig := map[string]any{
		"User":       "65532:65532",
		"Env":        []any{envPath},
		"Entrypoint": []any{"/projectionist"},
		"WorkingDir": "/",
	}
	if diff := cmp.Diff(wantImageConfig, config["config"]); diff != "" {
		t.Errorf("the pulled config's config (-want +got):\n%s", diff)
	}
	if config["os"] != "linux" || config["architecture"] != runtime.GOARCH {
		t.Errorf("the pulled config is for %v/%v, want linux/%s", config["os"], config["architecture"], runtime.GOARCH)
	}
	if len(layers) != 1 || len(wantLayers) != 1 || !bytes.Equal(layers[0], wantLayers[0]) {
		t.Fatalf("pulled %d layers, the archive holds %d; want the same one", len(layers), len(wantLayers))
	}
	binary, err := os.ReadFile(tinyBinary)
	if err != nil {
		t.Fatal(err)
	}
	_, layerFiles := listLayer(t, gunzip(t, layers[0]))
	if !bytes.Equal(layerFiles["projectionist"], binary) {
		t.Errorf("/projectionist in the pulled layer differs from the binary")
	}

	// -push alone writes no file, and the same inputs push the same
	// manifest under another tag.
	dir := t.TempDir()
	cmdDir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	runOK(t, "-binary", tinyBinary, "-name", host+"/acme/worker:2", "-push")
	t.Chdir(cmdDir)
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("-push without -out wrote %v", entries)
	}
	if again, _, _ := pull(t, host+"/acme/worker:2"); again != digest {
		t.Errorf("the second push has manifest %s, the first %s", again, digest)
	}
}

// TestPushFails: an unreachable registry fails with exit 1 and says what
// it was pushing.
func TestPushFails(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	srv := httptest.NewServer(registry.New())
	dead := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"-binary", tinyBinary, "-name", dead + "/acme/worker:1", "-push"}, &stdout, &stderr)
	if code != exitError || !strings.Contains(stderr.String(), "pushing "+dead+"/acme/worker:1") {
		t.Errorf("push to a closed port: exit %d, stderr %q; want exit 1 and a message naming the image", code, stderr.String())
	}
}

// TestBase puts the layer on a base image, from an archive and from a
// registry: the base's layers come first and unchanged, the new layer
// holds the executable and -extra files only, the config keeps the base's
// environment and takes -entrypoint and -user; and it is reproducible.
func TestBase(t *testing.T) {
	dir := t.TempDir()
	host := startRegistry(t)
	baseTar := filepath.Join(dir, "base.tar")
	runOK(t, "-binary", tinyBinary, "-name", host+"/acme/base:1", "-path", "/base", "-user", "0", "-out", baseTar, "-push")
	_, baseConfig, baseLayers := archiveImage(t, baseTar)

	certs := writeFile(t, dir, "ca.pem", "certificates\n", 0o644)
	for _, tc := range []struct{ name, base, wantManifestType, wantLayerType string }{
		{"archive", baseTar, "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.image.rootfs.diff.tar.gzip"},
		{"registry", host + "/acme/base:1", "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "image.tar")
			args := []string{"-binary", tinyBinary, "-name", "docker.io/acme/worker:1", "-base", tc.base, "-out", out,
				"-extra", certs + ":/etc/ssl/certs/ca-certificates.crt"}
			runOK(t, args...)
			first, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			runOK(t, args...)
			if second, _ := os.ReadFile(out); !bytes.Equal(first, second) {
				t.Errorf("two runs on the same base wrote different archives")
			}

			_, files := readArchive(t, out)
			var idx struct{ Manifests []map[string]any }
			if err := json.Unmarshal(files["index.json"], &idx); err != nil || len(idx.Manifests) != 1 {
				t.Fatalf("index.json: %v\n%s", err, files["index.json"])
			}
			if got := idx.Manifests[0]["mediaType"]; got != tc.wantManifestType {
				t.Errorf("index.json names a manifest of type %v, want %s", got, tc.wantManifestType)
			}
			_, manifestBlob := blob(t, files, "manifest", idx.Manifests[0])
			mfst := decode(t, "the manifest", manifestBlob)
			descs, _ := mfst["layers"].([]any)
			_, config, layers := archiveImage(t, out)
			if len(layers) != 2 || !bytes.Equal(layers[0], baseLayers[0]) {
				t.Fatalf("the image has %d layers; want the base's, then one more", len(layers))
			}
			if got := descs[1].(map[string]any)["mediaType"]; got != tc.wantLayerType {
				t.Errorf("the new layer's media type is %v, want %s", got, tc.wantLayerType)
			}
			var docker []struct{ Layers []string }
			if err := json.Unmarshal(files["manifest.json"], &docker); err != nil || len(docker) != 1 || len(docker[0].Layers) != 2 {
				t.Fatalf("manifest.json: %v\n%s", err, files["manifest.json"])
			}

			list, _ := listLayer(t, gunzip(t, layers[1]))
			var names []string
			for _, f := range list {
				names = append(names, f.Name)
			}
			wantNames := []string{"etc/", "etc/ssl/", "etc/ssl/certs/", "etc/ssl/certs/ca-certificates.crt", "projectionist"}
			if diff := cmp.Diff(wantNames, names); diff != "" {
				t.Errorf("the new layer's entries (-want +got):\n%s", diff)
			}

			wantImageConfig := map[string]any{
				"User":       "65532:65532",
				"Env":        baseConfig["config"].(map[string]any)["Env"],
				"Entrypoint": []any{"/projectionist"},
				"WorkingDir": "/",
			}
			if diff := cmp.Diff(wantImageConfig, config["config"]); diff != "" {
				t.Errorf("the config's config (-want +got):\n%s", diff)
			}
			rootfs, _ := config["rootfs"].(map[string]any)
			diffIDs, _ := rootfs["diff_ids"].([]any)
			history, _ := config["history"].([]any)
			if len(diffIDs) != 2 || len(history) != 2 || diffIDs[1] != digestOf(gunzip(t, layers[1])) {
				t.Errorf("the config's rootfs %v and history %v: want the base's and one more each", rootfs, history)
			}
		})
	}

	t.Run("other platform", func(t *testing.T) {
		windowsBase := filepath.Join(t.TempDir(), "windows.tar")
		runOK(t, "-binary", tinyBinary, "-name", "docker.io/acme/base:1", "-os", "windows", "-out", windowsBase)
		var stdout, stderr bytes.Buffer
		out := filepath.Join(t.TempDir(), "image.tar")
		code := run(t.Context(), []string{"-binary", tinyBinary, "-name", "docker.io/acme/worker:1", "-base", windowsBase, "-out", out}, &stdout, &stderr)
		if want := "is for windows/" + runtime.GOARCH + ", not for -os linux"; code != exitError || !strings.Contains(stderr.String(), want) {
			t.Errorf("a base for windows: exit %d, stderr %q; want exit 1 and %q", code, stderr.String(), want)
		}
	})
	t.Run("missing", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		out := filepath.Join(t.TempDir(), "image.tar")
		code := run(t.Context(), []string{"-binary", tinyBinary, "-name", "docker.io/acme/worker:1", "-base", host + "/acme/nothing:1", "-out", out}, &stdout, &stderr)
		if code != exitError || !strings.Contains(stderr.String(), "-base "+host+"/acme/nothing:1: pulling") {
			t.Errorf("a base that does not exist: exit %d, stderr %q", code, stderr.String())
		}
	})
}
