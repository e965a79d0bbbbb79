package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigDocExample runs docs/config.md's validation example: the file
// it shows gives exactly the message it shows.
func TestConfigDocExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "config.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	at := strings.Index(doc, "Validation reports every problem at once")
	if at < 0 {
		t.Fatal("docs/config.md has no validation example")
	}
	block := func(from int, fence string) (string, int) {
		start := strings.Index(doc[from:], fence)
		if start < 0 {
			t.Fatalf("no %q block after the validation example", fence)
		}
		start += from + len(fence)
		end := strings.Index(doc[start:], "```")
		return doc[start : start+end], start + end + 3
	}
	yaml, next := block(at, "```yaml\n")
	want, _ := block(next, "```\n")
	cfg := writeConfig(t, yaml)
	code, out, errOut := runCLI(t, "--config", cfg, "inventory")
	got := strings.ReplaceAll(errOut, cfg, "/etc/roce-agent/config.yaml")
	if code != 2 || out != "" || got != want {
		t.Errorf("exit %d, stderr:\n%s\nthe docs say:\n%s", code, got, want)
	}
}
