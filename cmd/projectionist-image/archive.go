package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The annotations containerd's import names images by.
const (
	// annotationRefName is the tag alone, as `docker save` writes it.
	annotationRefName = "org.opencontainers.image.ref.name"
	// annotationImageName is the full name; `ctr images import` and Docker's
	// containerd image store name the image after it.
	annotationImageName = "io.containerd.image.name"
)

// archiveFile is one blob or metadata file of the archive: its bytes, or a
// layer to stream.
type archiveFile struct {
	data  []byte
	layer v1.Layer
	size  int64
}

// writeArchive writes img to opts.out as one tar holding an OCI image
// layout (oci-layout, index.json, blobs/sha256/...) and a Docker-style
// manifest.json pointing at the same blobs: containerd reads the layout,
// Docker's classic image store manifest.json (Docker 25 and later point it
// into blobs/sha256 as here). go-containerregistry writes either format on
// its own (pkg/v1/layout into a directory, pkg/v1/tarball as a tar), never
// both in one tar, so the tar is written here from the image's blobs.
func writeArchive(opts options, img v1.Image) (int64, error) {
	files, err := archiveFiles(opts, img)
	if err != nil {
		return 0, err
	}
	size, err := writeFileAtomic(opts.out, func(w io.Writer) error {
		return writeOuterTar(w, files, opts)
	})
	if err != nil {
		return 0, fmt.Errorf("writing %s: %w", opts.out, err)
	}
	return size, nil
}

func archiveFiles(opts options, img v1.Image) (map[string]archiveFile, error) {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the manifest: %w", err)
	}
	manifestDigest, err := img.Digest()
	if err != nil {
		return nil, err
	}
	manifestType, err := img.MediaType()
	if err != nil {
		return nil, err
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	configDigest, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("reading the layers: %w", err)
	}

	files := map[string]archiveFile{
		blobPath(manifestDigest): {data: rawManifest},
		blobPath(configDigest):   {data: rawConfig},
	}
	docker := tarball.Descriptor{Config: blobPath(configDigest), RepoTags: []string{opts.name}}
	for _, l := range layers {
		digest, err := l.Digest()
		if err != nil {
			return nil, err
		}
		size, err := l.Size()
		if err != nil {
			return nil, err
		}
		files[blobPath(digest)] = archiveFile{layer: l, size: size}
		docker.Layers = append(docker.Layers, blobPath(digest))
	}

	idx, err := json.Marshal(v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: manifestType,
			Digest:    manifestDigest,
			Size:      int64(len(rawManifest)),
			Annotations: map[string]string{
				annotationImageName: opts.name,
				annotationRefName:   opts.tag,
			},
			// containerd filters an index's manifests by platform before
			// it reads any config; saying it here spares it the guess.
			Platform: &v1.Platform{Architecture: opts.arch, OS: opts.os},
		}},
	})
	if err != nil {
		return nil, err
	}
	layout, err := json.Marshal(struct {
		ImageLayoutVersion string `json:"imageLayoutVersion"`
	}{"1.0.0"})
	if err != nil {
		return nil, err
	}
	dockerManifest, err := json.Marshal(tarball.Manifest{docker})
	if err != nil {
		return nil, err
	}
	files["oci-layout"] = archiveFile{data: layout}
	files["index.json"] = archiveFile{data: idx}
	files["manifest.json"] = archiveFile{data: dockerManifest}
	return files, nil
}

// writeOuterTar writes the OCI layout (and manifest.json) as a tar, its
// directories first and every file sorted by name, owned by 0:0 and
// stamped with the epoch.
func writeOuterTar(w io.Writer, files map[string]archiveFile, opts options) error {
	tw := tar.NewWriter(w)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: opts.epoch}); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		f := files[name]
		size := f.size
		if f.layer == nil {
			size = int64(len(f.data))
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: opts.epoch}); err != nil {
			return err
		}
		if f.layer == nil {
			if _, err := tw.Write(f.data); err != nil {
				return err
			}
			continue
		}
		if err := copyLayer(tw, f.layer, size); err != nil {
			return fmt.Errorf("copying layer %s: %w", name, err)
		}
	}
	return tw.Close()
}

func copyLayer(w io.Writer, l v1.Layer, size int64) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	if n, err := io.Copy(w, rc); err != nil {
		return err
	} else if n != size {
		return fmt.Errorf("%d bytes, expected %d", n, size)
	}
	return nil
}

// blobPath is where a blob lives in an OCI layout.
func blobPath(digest v1.Hash) string {
	return "blobs/" + digest.Algorithm + "/" + digest.Hex
}

// writeFileAtomic writes the archive beside out and renames it into place, so
// a failed run never leaves a truncated archive under the final name.
func writeFileAtomic(out string, write func(io.Writer) error) (size int64, err error) {
	dir := filepath.Dir(out)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(out)+".*")
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := write(f); err != nil {
		return 0, err
	}
	if err := f.Chmod(0o644); err != nil {
		return 0, err
	}
	info, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return 0, err
	}
	return info.Size(), nil
}
