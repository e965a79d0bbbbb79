package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, 0, "--bin-dir"},
		{[]string{"extra"}, 2, `unexpected argument "extra"`},
		{[]string{"--hosts", "x"}, 2, "invalid argument"},
		{[]string{"--bogus"}, 2, "unknown flag: --bogus"},
	} {
		var out, errOut bytes.Buffer
		if code := run(tc.args, &out, &errOut); code != tc.code || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("roce-lab %v: exit %d, want %d; stderr %q lacks %q", tc.args, code, tc.code, errOut.String(), tc.want)
		}
	}
}

// TestCleanupNothingLeft: --cleanup with nothing to remove succeeds and
// removes nothing.
func TestCleanupNothingLeft(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (run as root or with go test -exec sudo)")
	}
	var out, errOut bytes.Buffer
	prefix := fmt.Sprintf("c%d-", os.Getpid()%10000)
	if code := run([]string{"--cleanup", "--prefix", prefix}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), prefix) {
		t.Errorf("stdout %q", out.String())
	}
}
