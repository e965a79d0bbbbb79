// Command chartpkg packages the roce-agent Helm chart for a build (`make
// package`): the chart as helm loads it (.helmignore applied), with
// appVersion set to the image tag of the same build, so that the chart's
// default image is the one built beside it. Unlike `helm package` the
// archive is reproducible: entries sorted, owned by root, every time the
// given one, no gzip name or time. The archive is loaded back with helm and
// must give that appVersion.
//
//	go run ./chartpkg -chart ../helm/roce-agent -app-version TAG -mtime EPOCH -out FILE.tgz
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
)

func main() {
	dir := flag.String("chart", "", "the chart directory")
	appVersion := flag.String("app-version", "", "the image tag this build made (the chart's appVersion)")
	mtime := flag.Int64("mtime", 0, "every entry's time, seconds since the epoch (SOURCE_DATE_EPOCH)")
	out := flag.String("out", "", "the archive to write")
	flag.Parse()
	if err := run(*dir, *appVersion, *out, time.Unix(*mtime, 0).UTC()); err != nil {
		fmt.Fprintln(os.Stderr, "chartpkg:", err)
		os.Exit(1)
	}
}

// appVersionLine is Chart.yaml's appVersion line.
var appVersionLine = regexp.MustCompile(`(?m)^appVersion:.*$`)

// validTag is what an image tag may be (the OCI distribution spec).
var validTag = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

func run(dir, appVersion, out string, mtime time.Time) error {
	switch {
	case dir == "":
		return errors.New("-chart: the chart directory is required")
	case !validTag.MatchString(appVersion):
		return fmt.Errorf("-app-version: %q is not an image tag", appVersion)
	case out == "":
		return errors.New("-out: the archive to write is required")
	}
	ch, err := loader.LoadDir(dir)
	if err != nil {
		return fmt.Errorf("load %s: %w", dir, err)
	}
	name := ch.Metadata.Name
	files := map[string][]byte{}
	for _, f := range ch.Raw {
		files[f.Name] = f.Data
	}
	meta, ok := files["Chart.yaml"]
	if !ok {
		return fmt.Errorf("%s: no Chart.yaml among the files helm loads", dir)
	}
	if n := len(appVersionLine.FindAll(meta, -1)); n != 1 {
		return fmt.Errorf("%s/Chart.yaml: %d appVersion lines, want 1", dir, n)
	}
	files["Chart.yaml"] = appVersionLine.ReplaceAll(meta, []byte("appVersion: "+strconv.Quote(appVersion)))

	var buf bytes.Buffer
	if err := writeArchive(&buf, name, files, mtime); err != nil {
		return err
	}
	// what helm makes of it
	got, err := loader.LoadArchive(bytes.NewReader(buf.Bytes()))
	if err != nil {
		return fmt.Errorf("the archive does not load: %w", err)
	}
	if got.Metadata.AppVersion != appVersion || got.Metadata.Version != ch.Metadata.Version || len(got.Templates) != len(ch.Templates) {
		return fmt.Errorf("the archive loads as %s %s appVersion %s with %d templates, want %s %s appVersion %s with %d",
			got.Metadata.Name, got.Metadata.Version, got.Metadata.AppVersion, len(got.Templates),
			name, ch.Metadata.Version, appVersion, len(ch.Templates))
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// writeArchive writes files under name/ as a reproducible tar.gz.
func writeArchive(w *bytes.Buffer, name string, files map[string][]byte, mtime time.Time) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	zw.ModTime = mtime
	tw := tar.NewWriter(zw)
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		hdr := &tar.Header{Name: path.Join(name, p), Mode: 0o644, Size: int64(len(files[p])), ModTime: mtime,
			Typeflag: tar.TypeReg, Uname: "root", Gname: "root", Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(files[p]); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}
