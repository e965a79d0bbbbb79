package lab

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// fakeTools are the lab's stand-ins for ib_write_bw, ib_write_lat and
// rping (faketools/lib.sh, docs/lab.md): POSIX sh scripts that play
// captured soft-RoCE output and check the rail path with ping.
//
//go:embed faketools
var fakeTools embed.FS

// FakeTools are the names of the tools WriteFakeTools writes.
var FakeTools = []string{"ib_write_bw", "ib_write_lat", "rping"}

// WriteFakeTools writes the fake probe tools into dir (created if
// needed) for a host whose fixture sysfs tree is sysfsRoot: the scripts,
// their shared code and captures, and lab.env naming the tree. dir is
// what the host's agent takes as probes.tools_dir.
func WriteFakeTools(dir, sysfsRoot string) error {
	if !filepath.IsAbs(sysfsRoot) {
		return fmt.Errorf("fake tools: sysfs root %s is not absolute", sysfsRoot)
	}
	if strings.ContainsAny(sysfsRoot, "'\n") {
		return fmt.Errorf("fake tools: sysfs root %q has a quote or a newline", sysfsRoot)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("fake tools: %w", err)
	}
	entries, err := fs.ReadDir(fakeTools, "faketools")
	if err != nil {
		return fmt.Errorf("fake tools: %w", err)
	}
	for _, e := range entries {
		data, err := fakeTools.ReadFile("faketools/" + e.Name())
		if err != nil {
			return fmt.Errorf("fake tools: %w", err)
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(string(data), "#!") {
			mode = 0o755
		}
		if err := writeFileMode(filepath.Join(dir, e.Name()), data, mode); err != nil {
			return err
		}
	}
	env := "# Written by the lab: the host's fixture sysfs tree.\nSYSFS_ROOT='" + sysfsRoot + "'\n"
	return writeFileMode(filepath.Join(dir, "lab.env"), []byte(env), 0o644)
}

// writeFileMode writes a file with a mode, whatever the umask.
func writeFileMode(path string, data []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return nil
}
