package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func testInfo() *debug.BuildInfo {
	return &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Path:      "github.com/roce-agent/roce-agent/cmd/roce-agent",
		Main:      debug.Module{Path: "github.com/roce-agent/roce-agent", Version: "v0.0.0-20260101000000-0123456789ab"},
		Deps: []*debug.Module{
			{Path: "github.com/spf13/cobra", Version: "v1.10.2", Sum: "h1:cLc6mIR66NwD8XOXp9+Ko/5CmQSFBPq+kd3Mv3PIeKs="},
			{Path: "github.com/NVIDIA/go-nvml", Version: "v0.13.3-0", Sum: "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},
			{Path: "example.com/old", Version: "v1.0.0", Replace: &debug.Module{Path: "example.com/new", Version: "v1.0.1"}},
		},
		Settings: []debug.BuildSetting{{Key: "GOARCH", Value: "arm64"}, {Key: "-trimpath", Value: "true"}, {Key: "CGO_ENABLED", Value: "1"}},
	}
}

func TestNew(t *testing.T) {
	at := time.Unix(1767225600, 0) // 2026-01-01
	bom, err := New(testInfo(), Options{Name: "roce-agent", Version: "v1.2.3+4.gabc", License: "Apache-2.0", SHA256: "00ff", Commit: "abc", Time: at})
	if err != nil {
		t.Fatal(err)
	}
	m := bom.Metadata.Component
	if m.Name != "roce-agent" || m.Version != "v1.2.3+4.gabc" || m.PURL != "pkg:golang/github.com/roce-agent/roce-agent@v1.2.3%2B4.gabc" {
		t.Errorf("main component %+v", m)
	}
	if m.Licenses[0].License.ID != "Apache-2.0" || m.Hashes[0].Content != "00ff" {
		t.Errorf("main component license or hash: %+v", m)
	}
	if bom.Metadata.Timestamp != "2026-01-01T00:00:00Z" {
		t.Errorf("timestamp %q", bom.Metadata.Timestamp)
	}
	var names []string
	for _, c := range bom.Components {
		names = append(names, c.Name+"@"+c.Version)
	}
	// stdlib first, then the modules by purl; a replaced module is its
	// replacement.
	want := "stdlib@go1.26.8 example.com/new@v1.0.1 github.com/NVIDIA/go-nvml@v0.13.3-0 github.com/spf13/cobra@v1.10.2"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("components %s, want %s", got, want)
	}
	if c := bom.Components[1]; len(c.Properties) != 1 || c.Properties[0].Value != "example.com/old@v1.0.0" {
		t.Errorf("replacement not recorded: %+v", c)
	}
	if c := bom.Components[2]; c.Hashes[0].Content != strings.Repeat("0", 64) {
		t.Errorf("h1 hash as hex: %+v", c.Hashes)
	}
	if bom.Components[0].PURL != "pkg:golang/stdlib@1.26.8" {
		t.Errorf("stdlib purl %s", bom.Components[0].PURL)
	}
	if len(bom.Dependencies) != 5 || len(bom.Dependencies[0].DependsOn) != 4 || bom.Dependencies[0].Ref != m.BOMRef {
		t.Errorf("dependencies %+v", bom.Dependencies)
	}
	var keys []string
	for _, p := range m.Properties {
		keys = append(keys, p.Name)
	}
	if got := strings.Join(keys, " "); got != "go:package go:module go:build:-trimpath go:build:CGO_ENABLED go:build:GOARCH go:build:vcs.revision" {
		t.Errorf("properties %s", got)
	}
	if !strings.HasPrefix(bom.SerialNumber, "urn:uuid:") || len(bom.SerialNumber) != 45 || bom.SerialNumber[23] != '8' {
		t.Errorf("serial number %s", bom.SerialNumber)
	}
}

func TestNewRefusesNoModule(t *testing.T) {
	if _, err := New(&debug.BuildInfo{}, Options{}); err == nil {
		t.Error("no error for build information without a main module")
	}
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{"v1.0.0": "v1.0.0", "v0.0.0-dev+abc": "v0.0.0-dev%2Babc", "a b/c": "a%20b%2Fc", "x~y_z": "x~y_z"} {
		if got := escape(in); got != want {
			t.Errorf("escape(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRunOnTestBinary reads this test binary's build information, as the
// build reads roce-agent's, twice: the same bytes, valid JSON, SOURCE_DATE_EPOCH
// as the timestamp.
func TestRunOnTestBinary(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1767225600")
	out := filepath.Join(t.TempDir(), "a.json")
	if err := run([]string{"-name", "sbom.test", "-version", "v9.9.9", "-license", "Apache-2.0", "-o", out, exe}, nil); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := run([]string{"-name", "sbom.test", "-version", "v9.9.9", "-license", "Apache-2.0", exe}, &again); err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, again.Bytes()) {
		t.Error("two runs on the same binary differ")
	}
	var bom BOM
	if err := json.Unmarshal(first, &bom); err != nil {
		t.Fatal(err)
	}
	if bom.BOMFormat != "CycloneDX" || bom.SpecVersion != "1.5" || bom.Metadata.Timestamp != "2026-01-01T00:00:00Z" || bom.Metadata.Component.Version != "v9.9.9" {
		t.Errorf("bom %+v", bom.Metadata)
	}
	if len(bom.Components) == 0 || bom.Components[0].Name != "stdlib" {
		t.Errorf("components %+v", bom.Components)
	}
	if len(bom.Metadata.Component.Hashes) != 1 || len(bom.Metadata.Component.Hashes[0].Content) != 64 {
		t.Errorf("binary hash %+v", bom.Metadata.Component.Hashes)
	}
}

func TestRunErrors(t *testing.T) {
	if err := run(nil, nil); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("no binary: %v", err)
	}
	notGo := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(notGo, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{notGo}, nil); err == nil {
		t.Error("no error for a file that is not a Go binary")
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	exe, _ := os.Executable()
	if err := run([]string{exe}, nil); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Errorf("bad SOURCE_DATE_EPOCH: %v", err)
	}
}

// TestCommitDoesNotOverrideVCS: a binary's own VCS stamp wins over -commit.
func TestCommitDoesNotOverrideVCS(t *testing.T) {
	bi := testInfo()
	bi.Settings = append(bi.Settings, debug.BuildSetting{Key: "vcs.revision", Value: "fromgo"})
	bom, err := New(bi, Options{Commit: "fromflag"})
	if err != nil {
		t.Fatal(err)
	}
	var revs []string
	for _, p := range bom.Metadata.Component.Properties {
		if p.Name == "go:build:vcs.revision" {
			revs = append(revs, p.Value)
		}
	}
	if len(revs) != 1 || revs[0] != "fromgo" {
		t.Errorf("vcs.revision properties %v, want [fromgo]", revs)
	}
}
