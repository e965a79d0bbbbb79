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
		{[]string{"--help"}, 0, "--swap-rails"},
	} {
		var out, errOut bytes.Buffer
		if code := run(tc.args, &out, &errOut); code != tc.code || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("roce-lab %v: exit %d, want %d; stderr %q lacks %q", tc.args, code, tc.code, errOut.String(), tc.want)
		}
	}
}

func TestParseSwaps(t *testing.T) {
	got, err := parseSwaps([]string{"gpu-01:0,2", "gpu-00:3,1"})
	if err != nil || len(got) != 2 || got[0] != (swap{"gpu-01", 0, 2}) || got[1] != (swap{"gpu-00", 3, 1}) {
		t.Errorf("parseSwaps: %+v, %v", got, err)
	}
	for _, bad := range []string{"gpu-01", "gpu-01:0", ":0,1", "gpu-01:0,1,2", "gpu-01:a,b", "gpu-01:0, 1"} {
		if _, err := parseSwaps([]string{bad}); err == nil {
			t.Errorf("parseSwaps(%q): no error", bad)
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
