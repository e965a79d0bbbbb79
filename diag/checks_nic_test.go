package diag

import (
	"testing"

	"github.com/roce-agent/roce-agent/nic/sysfstest"
)

func TestPortActive(t *testing.T) {
	all(t, check(t, dgx(t, nil), "NIC-PORT-001"), Pass)
	rs := check(t, dgx(t, func(tr *sysfstest.Tree) {
		tr.WriteFile("/class/infiniband/mlx5_3/ports/1/state", "1: DOWN")
		tr.WriteFile("/class/infiniband/mlx5_3/ports/1/phys_state", "2: Polling")
	}), "NIC-PORT-001")
	want(t, rs, sysfstest.DGXNetdev(1), Fail, "DOWN/Polling", "not active")
	want(t, rs, sysfstest.DGXNetdev(0), Pass)
}

func TestPortSpeed(t *testing.T) {
	all(t, check(t, dgx(t, nil), "NIC-SPEED-001"), Pass)
	rs := check(t, dgx(t, func(tr *sysfstest.Tree) {
		tr.WriteFile("/class/infiniband/mlx5_4/ports/1/rate", "200 Gb/sec (4X HDR)")
	}), "NIC-SPEED-001")
	want(t, rs, sysfstest.DGXNetdev(2), Fail, "200 Gb/s", "400 Gb/s")
	// Garbage in the rate file: the check cannot tell, it does not crash.
	rs = check(t, dgx(t, func(tr *sysfstest.Tree) {
		tr.WriteFile("/class/infiniband/mlx5_4/ports/1/rate", "\x00\xffgarbage")
	}), "NIC-SPEED-001")
	want(t, rs, sysfstest.DGXNetdev(2), Unknown, "unreadable")
}
