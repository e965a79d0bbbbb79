package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestNCCLEnv(t *testing.T) {
	tos := 106
	rails := []RailStatus{
		{Rail: 1, RDMADevice: "mlx5_3", GIDIndexIPv4: 3, GIDIndexIPv6: 5},
		{Rail: 0, RDMADevice: "mlx5_0", GIDIndexIPv4: 3, GIDIndexIPv6: 5},
		{Rail: 2, RDMADevice: "", GIDIndexIPv4: -1, GIDIndexIPv6: -1}, // a veth rail: not an HCA
	}
	got, notes := NCCLEnv(rails, &tos)
	want := "# Written by roce-agent: the rail RDMA devices and their RoCE v2 GID index.\nNCCL_IB_HCA=mlx5_0:1,mlx5_3:1\nNCCL_IB_GID_INDEX=3\nNCCL_IB_TC=106\n"
	if string(got) != want || len(notes) != 0 {
		t.Errorf("env:\n%s\nnotes %v", got, notes)
	}
	rails[1].GIDIndexIPv4 = 7
	got, notes = NCCLEnv(rails, nil)
	if string(got) != "# Written by roce-agent: the rail RDMA devices and their RoCE v2 GID index.\nNCCL_IB_HCA=mlx5_0:1,mlx5_3:1\n" || len(notes) != 1 {
		t.Errorf("disagreeing rails:\n%s\nnotes %v", got, notes)
	}

	// Rewritten only when it changes.
	path := filepath.Join(t.TempDir(), NCCLEnvFile)
	if changed, err := writeIfChanged(path, got); !changed || err != nil {
		t.Fatal(changed, err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	if changed, err := writeIfChanged(path, got); changed || err != nil {
		t.Fatal(changed, err)
	}
	if st, _ := os.Stat(path); !st.ModTime().Equal(old) {
		t.Error("unchanged env file was rewritten")
	}
}
