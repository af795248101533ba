package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// TestArchiveValidates reads the archive as the two kinds of importers do,
// through go-containerregistry's readers, and has its validate package
// check every digest, size, diff ID and the config against the manifest:
// the OCI layout (containerd) and manifest.json (docker load).
func TestArchiveValidates(t *testing.T) {
	out := filepath.Join(t.TempDir(), "image.tar")
	runOK(t, "-binary", tinyBinary, "-name", "docker.io/projectionist/projectionist:dev", "-out", out)

	dir := t.TempDir()
	_, files := readArchive(t, out)
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("reading the OCI layout: %v", err)
	}
	if err := validate.Index(idx); err != nil {
		t.Errorf("the OCI layout's index does not validate: %v", err)
	}

	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatalf("reading the archive through manifest.json: %v", err)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("the image of manifest.json does not validate: %v", err)
	}
}
