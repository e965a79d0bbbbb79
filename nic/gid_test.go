package nic

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/roce-agent/roce-agent/nic/sysfstest"
)

func TestGIDIndex(t *testing.T) {
	dgx := mustFS(t, filepath.Join("..", "testdata", "sysfs", "dgx-h100", "sys"))
	soft := mustFS(t, filepath.Join("..", "testdata", "sysfs", "soft-roce", "sys"))
	for _, tc := range []struct {
		fs     *FS
		dev    string
		addr   string
		netdev string
		want   int
	}{
		// Dual-mode mlx5: v1 at even, v2 at odd indexes; link-local is 0/1.
		{dgx, "mlx5_0", "10.0.0.35", "enp27s0np0", 3},
		{dgx, "mlx5_0", "fc00:0:0:1::23", "enp27s0np0", 5},
		{dgx, "mlx5_3", "10.1.0.35", "", 3},
		// rxe, from the capture: v2 only.
		{soft, "rxe0", "10.0.0.0", "vethA", 1},
		{soft, "rxe1", "fd00::1", "vethB", 2},
	} {
		got, err := tc.fs.GIDIndex(tc.dev, 1, netip.MustParseAddr(tc.addr), tc.netdev)
		if err != nil || got != tc.want {
			t.Errorf("GIDIndex(%s, %s) = %d, %v; want %d", tc.dev, tc.addr, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ dev, addr, netdev string }{
		{"mlx5_0", "10.9.9.9", ""},            // no such address
		{"mlx5_0", "10.0.0.35", "enp61s0np0"}, // on another netdev
	} {
		if _, err := dgx.GIDIndex(tc.dev, 1, netip.MustParseAddr(tc.addr), tc.netdev); !errors.Is(err, ErrGIDNotFound) {
			t.Errorf("GIDIndex(%s, %s, %s): %v, want ErrGIDNotFound", tc.dev, tc.addr, tc.netdev, err)
		}
	}
	if _, err := dgx.GIDIndex("mlx5_77", 1, netip.MustParseAddr("10.0.0.35"), ""); err == nil || errors.Is(err, ErrGIDNotFound) {
		t.Errorf("missing device: %v", err)
	}
}

// GIDs appear asynchronously: WaitGIDIndex polls until the entry exists.
func TestWaitGIDIndex(t *testing.T) {
	tree := sysfstest.New(t.TempDir())
	fn := tree.HostBridge("0000:17", 0).Bridge("0000:17:01.0", 0x8086, 1).Function("0000:18:00.0", sysfstest.PCIFunc{Vendor: 0x15b3, Class: 0x020000})
	fn.AddRDMA("mlx5_0", sysfstest.RDMADevice{Ports: []sysfstest.RDMAPort{{State: "4: ACTIVE", GIDs: sysfstest.RoCEGIDs("eth0", "02:00:00:00:00:01"), GIDTableSize: 8}}})
	if tree.Err() != nil {
		t.Fatal(tree.Err())
	}
	s := mustFS(t, tree.Root())
	dev := "/devices/pci0000:17/0000:17:01.0/0000:18:00.0/infiniband/mlx5_0/ports/1"
	go func() {
		time.Sleep(30 * time.Millisecond)
		tree.WriteFile(dev+"/gid_attrs/types/5", "RoCE v2")
		tree.WriteFile(dev+"/gid_attrs/ndevs/5", "eth0")
		tree.WriteFile(dev+"/gids/5", sysfstest.GID("10.0.0.1"))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	i, err := s.WaitGIDIndex(ctx, "mlx5_0", 1, netip.MustParseAddr("10.0.0.1"), "eth0", 5*time.Millisecond)
	if err != nil || i != 5 {
		t.Fatalf("WaitGIDIndex = %d, %v", i, err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if _, err := s.WaitGIDIndex(short, "mlx5_0", 1, netip.MustParseAddr("10.0.0.2"), "eth0", 5*time.Millisecond); !errors.Is(err, ErrGIDNotFound) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}
}
