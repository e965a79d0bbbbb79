// Command sbom writes a CycloneDX 1.5 JSON SBOM of a Go binary from the
// build information the Go linker embeds in it (what `go version -m` shows):
// the main module, every module linked in (replacements resolved), the Go
// standard library, and the build settings. It reads binaries of any
// architecture, so the arm64 build's SBOM is made on an amd64 host, and its
// output depends only on the binary and the flags: the same binary gives the
// same bytes (the timestamp is SOURCE_DATE_EPOCH's, the serial number is
// derived from the binary's SHA-256).
//
//	go run ./packaging/sbom -version v1.2.3 -commit SHA -license Apache-2.0 -o roce-agent.cdx.json dist/roce-agent_linux_amd64
package main

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// BOM is the subset of CycloneDX 1.5 this tool writes.
type BOM struct {
	BOMFormat    string       `json:"bomFormat"`
	SpecVersion  string       `json:"specVersion"`
	SerialNumber string       `json:"serialNumber"`
	Version      int          `json:"version"`
	Metadata     Metadata     `json:"metadata"`
	Components   []Component  `json:"components"`
	Dependencies []Dependency `json:"dependencies"`
}

// Metadata says what the BOM describes and when it was made.
type Metadata struct {
	Timestamp string    `json:"timestamp,omitempty"`
	Tools     Tools     `json:"tools"`
	Component Component `json:"component"`
}

// Tools names the generator.
type Tools struct {
	Components []Component `json:"components"`
}

// Component is an application or a library.
type Component struct {
	Type       string     `json:"type"`
	BOMRef     string     `json:"bom-ref,omitempty"`
	Name       string     `json:"name"`
	Version    string     `json:"version,omitempty"`
	PURL       string     `json:"purl,omitempty"`
	Hashes     []Hash     `json:"hashes,omitempty"`
	Licenses   []License  `json:"licenses,omitempty"`
	Properties []Property `json:"properties,omitempty"`
}

// Hash is a digest of a component.
type Hash struct {
	Alg     string `json:"alg"`
	Content string `json:"content"`
}

// License is an SPDX license identifier.
type License struct {
	License struct {
		ID string `json:"id"`
	} `json:"license"`
}

// Property is a name/value pair.
type Property struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Dependency lists what a component depends on, by bom-ref.
type Dependency struct {
	Ref       string   `json:"ref"`
	DependsOn []string `json:"dependsOn"`
}

// Options are what the binary's build information does not say.
type Options struct {
	// Name of the application ("roce-agent"); Version replaces the main
	// module's version (the Go toolchain's VCS pseudo-version) when set.
	Name, Version string
	// License is the application's SPDX license identifier ("" : none).
	License string
	// Commit is the source revision, recorded as the build setting
	// vcs.revision when the binary has none (built with -buildvcs=false).
	Commit string
	// SHA256 is the binary's digest (hex).
	SHA256 string
	// Time is the BOM's timestamp (zero: none).
	Time time.Time
}

// New builds the BOM of a binary from its build information.
func New(bi *debug.BuildInfo, o Options) (*BOM, error) {
	if bi == nil || bi.Main.Path == "" {
		return nil, errors.New("no main module in the build information (not built in module mode?)")
	}
	version := o.Version
	if version == "" {
		version = bi.Main.Version
	}
	name := o.Name
	if name == "" {
		name = bi.Path[strings.LastIndex(bi.Path, "/")+1:]
	}
	main := Component{
		Type:    "application",
		Name:    name,
		Version: version,
		PURL:    purl(bi.Main.Path, version),
	}
	main.BOMRef = main.PURL
	if o.SHA256 != "" {
		main.Hashes = []Hash{{Alg: "SHA-256", Content: o.SHA256}}
	}
	if o.License != "" {
		var l License
		l.License.ID = o.License
		main.Licenses = []License{l}
	}
	main.Properties = append(main.Properties, Property{"go:package", bi.Path}, Property{"go:module", bi.Main.Path})
	settings := append([]debug.BuildSetting(nil), bi.Settings...)
	if o.Commit != "" && !slices.ContainsFunc(settings, func(s debug.BuildSetting) bool { return s.Key == "vcs.revision" }) {
		settings = append(settings, debug.BuildSetting{Key: "vcs.revision", Value: o.Commit})
	}
	sort.SliceStable(settings, func(i, j int) bool { return settings[i].Key < settings[j].Key })
	for _, s := range settings {
		main.Properties = append(main.Properties, Property{"go:build:" + s.Key, s.Value})
	}

	goVersion := strings.TrimPrefix(bi.GoVersion, "go")
	std := Component{Type: "library", Name: "stdlib", Version: bi.GoVersion, PURL: purl("stdlib", goVersion)}
	std.BOMRef = std.PURL
	comps := []Component{std}
	for _, d := range bi.Deps {
		m := d
		c := Component{Type: "library"}
		if d.Replace != nil {
			m = d.Replace
			c.Properties = []Property{{"go:replaces", d.Path + "@" + d.Version}}
		}
		c.Name, c.Version = m.Path, m.Version
		c.PURL = purl(m.Path, m.Version)
		c.BOMRef = c.PURL
		if h, ok := h1ToSHA256(m.Sum); ok {
			// go.sum's h1: the SHA-256 of the module's file hash list
			// (golang.org/x/mod/sumdb/dirhash), as hex.
			c.Hashes = []Hash{{Alg: "SHA-256", Content: h}}
		}
		comps = append(comps, c)
	}
	sort.SliceStable(comps[1:], func(i, j int) bool { return comps[1+i].BOMRef < comps[1+j].BOMRef })
	refs := make([]string, 0, len(comps))
	deps := []Dependency{{Ref: main.BOMRef}}
	for _, c := range comps {
		refs = append(refs, c.BOMRef)
		deps = append(deps, Dependency{Ref: c.BOMRef, DependsOn: []string{}})
	}
	deps[0].DependsOn = refs

	bom := &BOM{
		BOMFormat:    "CycloneDX",
		SpecVersion:  "1.5",
		SerialNumber: serial(o.SHA256, main.BOMRef),
		Version:      1,
		Metadata: Metadata{
			Tools:     Tools{Components: []Component{{Type: "application", Name: "roce-agent packaging/sbom"}}},
			Component: main,
		},
		Components:   comps,
		Dependencies: deps,
	}
	if !o.Time.IsZero() {
		bom.Metadata.Timestamp = o.Time.UTC().Format(time.RFC3339)
	}
	return bom, nil
}

// purl is the package URL of a Go module version: pkg:golang/PATH@VERSION,
// each path segment and the version percent-encoded.
func purl(path, version string) string {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		segs[i] = escape(s)
	}
	p := "pkg:golang/" + strings.Join(segs, "/")
	if version != "" {
		p += "@" + escape(version)
	}
	return p
}

// escape percent-encodes all but RFC 3986's unreserved characters.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// h1ToSHA256 turns a go.sum "h1:" hash into hex.
func h1ToSHA256(sum string) (string, bool) {
	b64, ok := strings.CutPrefix(sum, "h1:")
	if !ok {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != sha256.Size {
		return "", false
	}
	return hex.EncodeToString(raw), true
}

// serial is a urn:uuid derived from the binary's digest and the main
// component (an RFC 9562 version 8 UUID): stable for the same binary.
func serial(sha, ref string) string {
	h := sha256.Sum256([]byte(sha + "\x00" + ref))
	h[6] = h[6]&0x0f | 0x80 // version 8
	h[8] = h[8]&0x3f | 0x80 // variant 10
	x := hex.EncodeToString(h[:16])
	return "urn:uuid:" + x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// sourceDate is SOURCE_DATE_EPOCH (reproducible-builds.org) as a time; zero
// when unset.
func sourceDate() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: not a number of seconds", s)
	}
	return time.Unix(n, 0), nil
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sbom", flag.ContinueOnError)
	var o Options
	out := fs.String("o", "", "write the SBOM to this file (default: stdout)")
	fs.StringVar(&o.Name, "name", "", "the application's name (default: the main package's last path element)")
	fs.StringVar(&o.Version, "version", "", "the application's version (default: the main module's, from the build information)")
	fs.StringVar(&o.License, "license", "", "the application's SPDX license identifier")
	fs.StringVar(&o.Commit, "commit", "", "the source revision (recorded as vcs.revision when the binary has no VCS stamp)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: sbom [-o FILE] [-name N] [-version V] [-commit SHA] [-license ID] BINARY")
	}
	bin := fs.Arg(0)
	data, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	o.SHA256 = hex.EncodeToString(sum[:])
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	if o.Time, err = sourceDate(); err != nil {
		return err
	}
	bom, err := New(bi, o)
	if err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	js, err := json.MarshalIndent(bom, "", "  ")
	if err != nil {
		return err
	}
	js = append(js, '\n')
	if *out == "" {
		_, err = stdout.Write(js)
		return err
	}
	return os.WriteFile(*out, js, 0o644)
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sbom:", err)
		os.Exit(1)
	}
}
