package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Media types of the OCI image spec v1.1, and the annotations containerd's
// import names images by.
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"

	// annotationRefName is the tag alone, as `docker save` writes it.
	annotationRefName = "org.opencontainers.image.ref.name"
	// annotationImageName is the full name; `ctr images import` and Docker's
	// containerd image store name the image after it.
	annotationImageName = "io.containerd.image.name"

	envPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type ociLayout struct {
	ImageLayoutVersion string `json:"imageLayoutVersion"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type imageConfig struct {
	Created      string          `json:"created"`
	Architecture string          `json:"architecture"`
	OS           string          `json:"os"`
	Config       containerConfig `json:"config"`
	RootFS       rootFS          `json:"rootfs"`
	History      []history       `json:"history"`
}

type containerConfig struct {
	User       string   `json:"User"`
	Env        []string `json:"Env"`
	Entrypoint []string `json:"Entrypoint"`
	WorkingDir string   `json:"WorkingDir"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

type history struct {
	Created   string `json:"created"`
	CreatedBy string `json:"created_by"`
}

// dockerManifest is one element of the manifest.json that `docker save`
// writes (Docker 25 and later point it into blobs/sha256 as here). Docker's
// classic image store loads from it; containerd prefers the OCI layout when
// oci-layout is present.
type dockerManifest struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// layerEntry is one file or directory of the layer.
type layerEntry struct {
	name     string // relative to /, without a leading slash; directories end in "/"
	dir      bool
	mode     int64 // permission bits, plus 01000 (sticky) for /tmp
	uid, gid int
	data     []byte // a generated file's contents
	src      string // or the file on this machine to copy
	size     int64
}

// archiveResult is what a run reports.
type archiveResult struct {
	manifestDigest string
	archiveSize    int64
}

func writeArchive(opts options) (archiveResult, error) {
	entries, err := layerEntries(opts)
	if err != nil {
		return archiveResult{}, err
	}
	layer, diffID, err := buildLayer(entries, opts.epoch)
	if err != nil {
		return archiveResult{}, fmt.Errorf("writing the layer: %w", err)
	}
	layerDesc := descriptor{MediaType: mediaTypeLayer, Digest: sha256Digest(layer), Size: int64(len(layer))}

	created := opts.epoch.Format(time.RFC3339)
	config, err := json.Marshal(imageConfig{
		Created:      created,
		Architecture: opts.arch,
		OS:           opts.os,
		Config: containerConfig{
			User:       opts.user,
			Env:        []string{envPath},
			Entrypoint: opts.entrypoint,
			WorkingDir: "/",
		},
		RootFS: rootFS{Type: "layers", DiffIDs: []string{diffID}},
		History: []history{{
			Created:   created,
			CreatedBy: fmt.Sprintf("hack/ociimage: COPY %s %s", filepath.Base(opts.binary), opts.path),
		}},
	})
	if err != nil {
		return archiveResult{}, err
	}
	configDesc := descriptor{MediaType: mediaTypeConfig, Digest: sha256Digest(config), Size: int64(len(config))}

	mfst, err := json.Marshal(manifest{
		SchemaVersion: 2,
		MediaType:     mediaTypeManifest,
		Config:        configDesc,
		Layers:        []descriptor{layerDesc},
	})
	if err != nil {
		return archiveResult{}, err
	}
	manifestDesc := descriptor{
		MediaType: mediaTypeManifest,
		Digest:    sha256Digest(mfst),
		Size:      int64(len(mfst)),
		Annotations: map[string]string{
			annotationImageName: opts.name,
			annotationRefName:   opts.tag,
		},
		// containerd filters an index's manifests by platform before it
		// reads any config; saying it here spares it the guess.
		Platform: &platform{Architecture: opts.arch, OS: opts.os},
	}

	idx, err := json.Marshal(index{SchemaVersion: 2, MediaType: mediaTypeIndex, Manifests: []descriptor{manifestDesc}})
	if err != nil {
		return archiveResult{}, err
	}
	layout, err := json.Marshal(ociLayout{ImageLayoutVersion: "1.0.0"})
	if err != nil {
		return archiveResult{}, err
	}
	docker, err := json.Marshal([]dockerManifest{{
		Config:   blobPath(configDesc.Digest),
		RepoTags: []string{opts.name},
		Layers:   []string{blobPath(layerDesc.Digest)},
	}})
	if err != nil {
		return archiveResult{}, err
	}

	files := map[string][]byte{
		"oci-layout":                  layout,
		"index.json":                  idx,
		"manifest.json":               docker,
		blobPath(layerDesc.Digest):    layer,
		blobPath(configDesc.Digest):   config,
		blobPath(manifestDesc.Digest): mfst,
	}
	size, err := writeFileAtomic(opts.out, func(w io.Writer) error {
		return writeOuterTar(w, files, opts.epoch)
	})
	if err != nil {
		return archiveResult{}, fmt.Errorf("writing %s: %w", opts.out, err)
	}
	return archiveResult{manifestDigest: manifestDesc.Digest, archiveSize: size}, nil
}

// layerEntries lists the layer's files and directories, parents included,
// sorted by name (so a parent precedes its children).
func layerEntries(opts options) ([]layerEntry, error) {
	if err := checkExecutable(opts.binary, opts.os, opts.arch); err != nil {
		return nil, err
	}
	binInfo, err := os.Stat(opts.binary)
	if err != nil {
		return nil, err
	}
	entries := []layerEntry{
		{name: opts.path[1:], mode: 0o755, src: opts.binary, size: binInfo.Size()},
		{name: "etc/passwd", mode: 0o644, data: passwd(opts.uid, opts.gid)},
		{name: "etc/group", mode: 0o644, data: group(opts.gid)},
		// Nothing needs it (the workers run with a read-only root file
		// system), but programs assume it exists.
		{name: "tmp/", dir: true, mode: 0o1777},
	}
	if opts.uid != 0 {
		entries = append(entries, layerEntry{name: "home/nonroot/", dir: true, mode: 0o700, uid: opts.uid, gid: opts.gid})
	}
	for _, x := range opts.extras {
		info, err := os.Stat(x.src)
		if err != nil {
			return nil, fmt.Errorf("-extra %s:%s: %w", x.src, x.dst, err)
		}
		if !info.Mode().IsRegular() {
			return nil, fmt.Errorf("-extra %s:%s: %s is not a regular file", x.src, x.dst, x.src)
		}
		entries = append(entries, layerEntry{name: x.dst[1:], mode: int64(info.Mode().Perm()), src: x.src, size: info.Size()})
	}

	byName := make(map[string]layerEntry, len(entries))
	for _, e := range entries {
		key := strings.TrimSuffix(e.name, "/")
		if _, dup := byName[key]; dup {
			return nil, fmt.Errorf("/%s is put in the image twice (check -path and -extra)", key)
		}
		byName[key] = e
	}
	for _, e := range entries {
		for dir := path.Dir(strings.TrimSuffix(e.name, "/")); dir != "."; dir = path.Dir(dir) {
			parent, ok := byName[dir]
			if !ok {
				byName[dir] = layerEntry{name: dir + "/", dir: true, mode: 0o755}
			} else if !parent.dir {
				return nil, fmt.Errorf("/%s is a file in the image, so /%s cannot be put under it", dir, e.name)
			}
		}
	}
	all := make([]layerEntry, 0, len(byName))
	for _, e := range byName {
		all = append(all, e)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].name < all[j].name })
	return all, nil
}

// passwd names root and the image's user, so that tools print a name.
func passwd(uid, gid int) []byte {
	s := "root:x:0:0:root:/root:/sbin/nologin\n"
	if uid != 0 {
		s += fmt.Sprintf("nonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", uid, gid)
	}
	return []byte(s)
}

func group(gid int) []byte {
	s := "root:x:0:\n"
	if gid != 0 {
		s += fmt.Sprintf("nonroot:x:%d:\n", gid)
	}
	return []byte(s)
}

// elfMachines maps GOARCH to the ELF machine a binary for it declares.
var elfMachines = map[string]elf.Machine{
	"amd64":   elf.EM_X86_64,
	"arm64":   elf.EM_AARCH64,
	"arm":     elf.EM_ARM,
	"386":     elf.EM_386,
	"ppc64le": elf.EM_PPC64,
	"s390x":   elf.EM_S390,
	"riscv64": elf.EM_RISCV,
}

// checkExecutable refuses what would fail only once a pod starts: a binary
// for another architecture, or one that needs a dynamic loader the image
// does not have (the kubelet then reports a bare "no such file or
// directory").
func checkExecutable(file, goos, goarch string) error {
	info, err := os.Stat(file)
	if err != nil {
		return fmt.Errorf("-binary: %w", err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("-binary %s is not a regular file", file)
	}
	if goos != "linux" {
		return nil
	}
	f, err := elf.Open(file)
	if err != nil {
		return fmt.Errorf("-binary %s is not a Linux executable (ELF): %w", file, err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("-binary %s is an ELF %s, not an executable", file, f.Type)
	}
	if want, ok := elfMachines[goarch]; ok && f.Machine != want {
		return fmt.Errorf("-binary %s is built for %s, not for -arch %s (%s); build it with GOARCH=%s", file, f.Machine, goarch, want, goarch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp, _ := io.ReadAll(io.LimitReader(p.Open(), 256))
			return fmt.Errorf("-binary %s is dynamically linked (it needs %s), and the image has no C library: build it with CGO_ENABLED=0", file, strings.TrimRight(string(interp), "\x00"))
		}
	}
	return nil
}

// buildLayer returns the gzip'ed layer and its diff ID, the digest of the
// uncompressed tar.
func buildLayer(entries []layerEntry, mtime time.Time) (layer []byte, diffID string, err error) {
	var gz bytes.Buffer
	// The zero gzip header carries no name and no time, so the same tar
	// always compresses to the same bytes.
	zw := gzip.NewWriter(&gz)
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(diff, zw))
	for _, e := range entries {
		hdr := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: mtime,
		}
		switch {
		case e.dir:
			hdr.Typeflag = tar.TypeDir
		case e.src != "":
			hdr.Typeflag, hdr.Size = tar.TypeReg, e.size
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, "", err
		}
		switch {
		case e.src != "":
			if err := copyFile(tw, e.src, e.size); err != nil {
				return nil, "", err
			}
		case !e.dir:
			if _, err := tw.Write(e.data); err != nil {
				return nil, "", err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), "sha256:" + hex.EncodeToString(diff.Sum(nil)), nil
}

func copyFile(w io.Writer, src string, size int64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	if n, err := io.Copy(w, f); err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	} else if n != size {
		return fmt.Errorf("%s changed while it was read (%d bytes, expected %d)", src, n, size)
	}
	return nil
}

// writeOuterTar writes the OCI layout (and manifest.json) as a tar, its
// directories first and every file sorted by name.
func writeOuterTar(w io.Writer, files map[string][]byte, mtime time.Time) error {
	tw := tar.NewWriter(w)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: mtime}); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		data := files[name]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mtime}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	return tw.Close()
}

func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// blobPath is where a blob lives in an OCI layout.
func blobPath(digest string) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:")
}
