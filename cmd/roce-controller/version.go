package main

import "github.com/roce-agent/roce-agent/internal/buildinfo"

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
	return buildinfo.Text("roce-controller", buildinfo.Info(version, commit, date))
}
