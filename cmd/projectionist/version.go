package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is the release, set at build time:
//
//	go build -ldflags "-X main.version=v0.3.0" ./cmd/projectionist
var version = "dev"

func (c *cli) version(args []string) int {
	f := newFlags(commandHelp{
		name: "version", args: "",
		description: `
Prints the release (set at build time with -ldflags "-X main.version=..."),
the module version and the commit it was built from (from the build
information Go records), and the Go version.`,
		examples: `  projectionist version
  go build -ldflags "-X main.version=v0.3.0" -o projectionist ./cmd/projectionist && ./projectionist version`,
	})
	if done, code := c.parse(f, args); done {
		return code
	}
	fmt.Fprintf(c.stdout, "projectionist %s\n", version)
	if bi, ok := debug.ReadBuildInfo(); ok {
		fmt.Fprintf(c.stdout, "  module  %s %s\n", bi.Main.Path, bi.Main.Version)
		var rev, modified, at string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = " (modified)"
				}
			case "vcs.time":
				at = " " + s.Value
			}
		}
		if rev != "" {
			fmt.Fprintf(c.stdout, "  commit  %s%s%s\n", rev, at, modified)
		}
	}
	fmt.Fprintf(c.stdout, "  go      %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK
}
