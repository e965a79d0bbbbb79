package main

import "github.com/roce-agent/roce-agent/internal/buildinfo"

// Set with -ldflags "-X main.version=... -X main.commit=... -X main.date=..."
// (the Makefile's LDFLAGS); date is the build time, RFC 3339 in UTC.
var (
	version = "dev"
	commit  = ""
	date    = ""
)

// versionInfo is what `roce-agent version` prints: version, commit (when
// known), go, platform and date ("unknown" when the build did not set it).
func versionInfo() map[string]string { return buildinfo.Info(version, commit, date) }

// versionText is versionInfo as text: "roce-agent VERSION", then one
// indented "key: value" line per other field.
func versionText() string { return buildinfo.Text("roce-agent", versionInfo()) }
