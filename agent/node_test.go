package agent

import (
	"testing"

	"github.com/roce-agent/roce-agent/nic"
)

// The live-host decisions are made once, in the pipeline: NVML by
// gpu.nvml, the node name from the host only for the live /sys.
func TestHostDecisions(t *testing.T) {
	tree := fixtureFS(t, "soft-roce")
	live, err := nic.NewFS("/sys")
	if err != nil {
		t.Skip("no /sys here")
	}
	for _, tc := range []struct {
		mode string
		fs   *nic.FS
		want bool
	}{
		{"auto", tree, false}, {"auto", live, true},
		{"on", tree, true}, {"on", live, true},
		{"off", tree, false}, {"off", live, false},
	} {
		cfg := DefaultConfig()
		cfg.GPU.NVML = tc.mode
		if got := useNVML(cfg, tc.fs); got != tc.want {
			t.Errorf("gpu.nvml %s on %s: ask NVML = %v, want %v", tc.mode, tc.fs.Root(), got, tc.want)
		}
	}
	cfg := DefaultConfig()
	if nodeName(cfg, tree) != "" || nodeName(cfg, live) == "" {
		t.Errorf("node name: tree %q, live %q", nodeName(cfg, tree), nodeName(cfg, live))
	}
	cfg.Node.Name = "gpu-017"
	if nodeName(cfg, live) != "gpu-017" {
		t.Errorf("a configured name is kept")
	}
	cfg.GPU.NVML = "maybe"
	if err := cfg.Validate(); err == nil || err.Error() != `gpu.nvml: "maybe" is not one of auto, on, off` {
		t.Errorf("validate gpu.nvml: %v", err)
	}
}
