package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
)

// Set with -ldflags "-X main.version=... -X main.commit=... -X main.date=..."
// (the Makefile's LDFLAGS); date is the build time, RFC 3339 in UTC.
var (
	version = "dev"
	commit  = ""
	date    = ""
)

// versionInfo is what `roce-agent version` prints: version, commit (when
// known), go, platform and date ("unknown" when the build did not set it).
func versionInfo() map[string]string {
	info := map[string]string{"version": version, "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH}
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
	return info
}

// versionText is versionInfo as text: "roce-agent VERSION", then one
// indented "key: value" line per other field.
func versionText() string {
	info := versionInfo()
	keys := make([]string, 0, len(info))
	for k := range info {
		if k != "version" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "roce-agent %s\n", info["version"])
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s: %s\n", k, info[k])
	}
	return b.String()
}
