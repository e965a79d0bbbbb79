// Package buildinfo says what a binary of this module is: its version
// (set at link time), commit and build date (from the linker flags, else
// the Go toolchain's VCS stamp), Go version and platform.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
)

// Info is the build's facts: version, go and platform always, commit when
// known, date ("unknown" when neither the linker flags nor the VCS stamp
// give it). version, commit and date are the linker-set values ("" when
// unset; version "dev" then).
func Info(version, commit, date string) map[string]string {
	if version == "" {
		version = "dev"
	}
	info := map[string]string{"version": version, "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && commit == "":
				commit = s.Value
			case s.Key == "vcs.time" && date == "":
				date = s.Value
			}
		}
	}
	if commit != "" {
		info["commit"] = commit
	}
	if date == "" {
		date = "unknown"
	}
	info["date"] = date
	return info
}

// Text is Info as a program prints it: "NAME VERSION", then one indented
// "key: value" line per other fact, sorted by key.
func Text(name string, info map[string]string) string {
	keys := make([]string, 0, len(info))
	for k := range info {
		if k != "version" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", name, info["version"])
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s: %s\n", k, info[k])
	}
	return b.String()
}
