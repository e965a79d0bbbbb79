package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
)

// Set with -ldflags "-X main.version=... -X main.commit=... -X main.date=...";
// date is the build time, RFC 3339 in UTC.
var (
	version = "dev"
	commit  = ""
	date    = ""
)

// versionText is what `roce-controller version` prints: the version, then
// one indented "key: value" line each for commit (when known), date, go and
// platform.
func versionText() string {
	info := map[string]string{"go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH}
	c, d := commit, date
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && c == "":
				c = s.Value
			case s.Key == "vcs.time" && d == "":
				d = s.Value
			}
		}
	}
	if c != "" {
		info["commit"] = c
	}
	if d == "" {
		d = "unknown"
	}
	info["date"] = d
	keys := make([]string, 0, len(info))
	for k := range info {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "roce-controller %s\n", version)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s: %s\n", k, info[k])
	}
	return b.String()
}
