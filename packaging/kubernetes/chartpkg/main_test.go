package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
)

const chartDir = "../../helm/roce-agent"

// The packaged chart's default image is the build's: appVersion is the
// tag, and a default install renders the DaemonSet with IMAGE:tag. Two
// runs give the same bytes.
func TestPackageChart(t *testing.T) {
	dir := t.TempDir()
	tag := "0.0.0-dev_0123456789ab"
	mtime := time.Unix(1764460800, 0).UTC()
	a, b := filepath.Join(dir, "a.tgz"), filepath.Join(dir, "b.tgz")
	for _, out := range []string{a, b} {
		if err := run(chartDir, tag, out, mtime); err != nil {
			t.Fatal(err)
		}
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		t.Error("two runs gave different archives")
	}
	ch, err := loader.Load(a)
	if err != nil {
		t.Fatal(err)
	}
	src, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Metadata.AppVersion != tag || ch.Metadata.Version != src.Metadata.Version || len(ch.Raw) != len(src.Raw) {
		t.Fatalf("packaged %s appVersion %s, %d files; want %s appVersion %s, %d files",
			ch.Metadata.Version, ch.Metadata.AppVersion, len(ch.Raw), src.Metadata.Version, tag, len(src.Raw))
	}
	install := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	install.DryRun, install.ClientOnly, install.Replace = true, true, true
	install.ReleaseName, install.Namespace = "roce-agent", "roce-system"
	install.KubeVersion = &chartutil.KubeVersion{Version: "v1.32.0", Major: "1", Minor: "32"}
	rel, err := install.Run(ch, map[string]any{"controller": map[string]any{"url": "https://fabric-ctl:8443"}})
	if err != nil {
		t.Fatalf("render the packaged chart: %v", err)
	}
	if want := "image: ghcr.io/roce-agent/roce-agent:" + tag; !strings.Contains(rel.Manifest, want) {
		t.Errorf("the packaged chart's DaemonSet has no %q", want)
	}
}

func TestPackageChartRefuses(t *testing.T) {
	out := filepath.Join(t.TempDir(), "c.tgz")
	for _, tc := range []struct{ dir, tag, out, field string }{
		{"", "1.0.0", out, "-chart"},
		{chartDir, "", out, "-app-version"},
		{chartDir, "1.0.0+build", out, "-app-version"}, // '+' is not allowed in a tag
		{chartDir, "a b", out, "-app-version"},
		{chartDir, "1.0.0", "", "-out"},
		{t.TempDir(), "1.0.0", out, "load"},
	} {
		err := run(tc.dir, tc.tag, tc.out, time.Unix(0, 0))
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("run(%q, %q, %q): %v, want an error naming %s", tc.dir, tc.tag, tc.out, err, tc.field)
		}
		if _, serr := os.Stat(out); serr == nil {
			t.Fatalf("run(%q, %q) wrote %s", tc.dir, tc.tag, out)
		}
	}
}
