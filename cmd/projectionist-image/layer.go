package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

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
	entries := []layerEntry{{name: opts.path[1:], mode: 0o755, src: opts.binary, size: binInfo.Size()}}
	// A base image brings its own /etc and /tmp, which a layer of ours
	// would hide.
	if opts.base == "" {
		entries = append(entries,
			layerEntry{name: "etc/passwd", mode: 0o644, data: passwd(opts.uid, opts.gid)},
			layerEntry{name: "etc/group", mode: 0o644, data: group(opts.gid)},
			// Nothing needs it (the workers run with a read-only root file
			// system), but programs assume it exists.
			layerEntry{name: "tmp/", dir: true, mode: 0o1777},
		)
		if opts.uid != 0 {
			entries = append(entries, layerEntry{name: "home/nonroot/", dir: true, mode: 0o700, uid: opts.uid, gid: opts.gid})
		}
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

// buildLayer returns the gzip'ed layer tar.
func buildLayer(entries []layerEntry, mtime time.Time) ([]byte, error) {
	var gz bytes.Buffer
	// The zero gzip header carries no name and no time, and compress/gzip
	// is deterministic, so the same tar always compresses to the same
	// bytes. (go-containerregistry would compress at BestSpeed, which
	// makes a bigger layer.)
	zw := gzip.NewWriter(&gz)
	tw := tar.NewWriter(zw)
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
			return nil, err
		}
		switch {
		case e.src != "":
			if err := copyFile(tw, e.src, e.size); err != nil {
				return nil, err
			}
		case !e.dir:
			if _, err := tw.Write(e.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return gz.Bytes(), nil
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
