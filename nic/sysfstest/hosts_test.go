package sysfstest

import (
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/sysfs from the host builders")

const fixtureDir = "../../testdata/sysfs"

// TestFixturesUpToDate keeps the committed fixture trees equal to what the
// builders produce; run with -update after changing a builder.
func TestFixturesUpToDate(t *testing.T) {
	for name, build := range Hosts {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(fixtureDir, name)
			if *update {
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
				if _, err := build(dir); err != nil {
					t.Fatal(err)
				}
				return
			}
			fresh := t.TempDir()
			if _, err := build(fresh); err != nil {
				t.Fatal(err)
			}
			want := snapshot(t, fresh)
			got := snapshot(t, dir)
			for p, w := range want {
				if g, ok := got[p]; !ok {
					t.Errorf("%s: missing from %s (run go test ./nic/sysfstest -update)", p, dir)
				} else if g != w {
					t.Errorf("%s: %q, builder gives %q (run go test ./nic/sysfstest -update)", p, g, w)
				}
			}
			var extra []string
			for p := range got {
				if _, ok := want[p]; !ok {
					extra = append(extra, p)
				}
			}
			sort.Strings(extra)
			for _, p := range extra {
				t.Errorf("%s: in %s but not made by the builder", p, dir)
			}
		})
	}
}

// snapshot maps every file and symlink below dir to its contents or
// "link:<target>".
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "link:" + target
		case d.IsDir():
			// git keeps no empty directories, so only files and links count.
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestGIDHelpers(t *testing.T) {
	if got, want := GID("10.0.0.1"), "0000:0000:0000:0000:0000:ffff:0a00:0001"; got != want {
		t.Errorf("GID(10.0.0.1) = %s, want %s", got, want)
	}
	// The rxe capture: vethA 2e:d6:ff:f2:78:58 has GID 0 fe80::2cd6:ffff:fef2:7858.
	if got, want := LinkLocalGID("2e:d6:ff:f2:78:58"), "fe80:0000:0000:0000:2cd6:ffff:fef2:7858"; got != want {
		t.Errorf("LinkLocalGID = %s, want %s", got, want)
	}
}
