package diag

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/nic/sysfstest"
	"github.com/roce-agent/roce-agent/probe"
)

// toolRunner plays canned tool outputs: by tool name; a name it does not
// know is not installed.
type toolRunner map[string]probe.Output

type doneProcess probe.Output

func (p doneProcess) Wait() (probe.Output, error) { return probe.Output(p), nil }

func (r toolRunner) Start(_ context.Context, c probe.Command) (probe.Process, error) {
	out, ok := r[c.Name]
	if !ok {
		return nil, probe.ErrToolMissing
	}
	return doneProcess(out), nil
}

// withRail0 gives the env a desired rail 0 with these addresses.
func withRail0(e *Env, v4, v6 string) *Env {
	zero := 0
	e.Config.Rails = []agent.RailConfig{{Rail: &zero, IPv4: v4, IPv6: v6}}
	e.Desired = true
	return e
}

const rail0PortDir = "/class/infiniband/mlx5_0/ports/1"

func setGID(tr *sysfstest.Tree, index int, ip, typ string) {
	tr.WriteFile(filepath.Join(rail0PortDir, "gids", itoa(index)), sysfstest.GID(ip))
	tr.WriteFile(filepath.Join(rail0PortDir, "gid_attrs/types", itoa(index)), typ)
	tr.WriteFile(filepath.Join(rail0PortDir, "gid_attrs/ndevs", itoa(index)), sysfstest.DGXNetdev(0))
}

func itoa(i int) string { return string(rune('0' + i)) }

func TestRailGIDs(t *testing.T) {
	rs := check(t, withRail0(dgx(t, nil), "10.0.0.35/31", "fc00:0:0:1::23/127"), "ROCE-GID-001")
	want(t, rs, "enp27s0np0", Pass, "10.0.0.35 at index 3", "fc00:0:0:1::23 at index 5")
	rs = check(t, withRail0(dgx(t, nil), "10.0.0.37/31", ""), "ROCE-GID-001")
	want(t, rs, "enp27s0np0", Fail, "no RoCE v2 GID on enp27s0np0 for 10.0.0.37")
	// Rails without a desired address are not guessed at.
	want(t, rs, "enp61s0np0", Skip, "no desired address")
	// Without a desired state nothing is compared.
	want(t, check(t, dgx(t, nil), "ROCE-GID-001"), "node", Skip, "no desired state")
}

func TestNCCLGID(t *testing.T) {
	e := withRail0(dgx(t, nil), "10.0.0.35/31", "")
	want(t, check(t, e, "ROCE-GID-002"), "enp27s0np0", Pass, "index 3 (10.0.0.35, RoCE v2)")

	// A stray address got the lower GID index: NCCL takes it.
	e = withRail0(dgx(t, func(tr *sysfstest.Tree) {
		setGID(tr, 2, "10.9.9.9", "IB/RoCE v1")
		setGID(tr, 3, "10.9.9.9", "RoCE v2")
		setGID(tr, 6, "10.0.0.35", "IB/RoCE v1")
		setGID(tr, 7, "10.0.0.35", "RoCE v2")
	}), "10.0.0.35/31", "")
	want(t, check(t, e, "ROCE-GID-002"), "enp27s0np0", Fail, "source RoCE traffic from 10.9.9.9")

	// No IPv4 GID at all: NCCL falls back to an IPv6 or link-local GID.
	e = dgx(t, func(tr *sysfstest.Tree) {
		for _, i := range []int{2, 3} {
			tr.WriteFile(filepath.Join(rail0PortDir, "gids", itoa(i)), "0000:0000:0000:0000:0000:0000:0000:0000")
			tr.Remove(filepath.Join(rail0PortDir, "gid_attrs/types", itoa(i)))
		}
	})
	want(t, check(t, e, "ROCE-GID-002"), "enp27s0np0", Fail, "would not use a RoCE v2 GID")

	// The hand-off pins an index of the wrong family.
	e = withRail0(dgx(t, nil), "10.0.0.35/31", "")
	e.Config.StateDir = t.TempDir()
	if err := os.WriteFile(filepath.Join(e.Config.StateDir, agent.NCCLEnvFile), []byte("# x\nNCCL_IB_GID_INDEX=5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want(t, check(t, e, "ROCE-GID-002"), "enp27s0np0", Fail, "NCCL_IB_GID_INDEX=5", "fc00:0:0:1::23")
}

func TestActiveMTU(t *testing.T) {
	// A tree: derived from the netdev MTU.
	rs := check(t, dgx(t, nil), "ROCE-MTU-002")
	want(t, rs, "enp27s0np0", Pass, "4096 (netdev MTU 9000)")
	rs = check(t, dgx(t, func(tr *sysfstest.Tree) {
		tr.WriteFile("/class/net/enp27s0np0/mtu", "1500")
	}), "ROCE-MTU-002")
	want(t, rs, "enp27s0np0", Warn, "1024", "below 4184")

	// The live host: ibv_devinfo's word (real rxe captures) wins.
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	e := dgx(t, nil)
	e.Live = true
	e.Runner = toolRunner{"ibv_devinfo": {Stdout: read("ibv_devinfo_rxe0_mtu1500.txt")}}
	want(t, check(t, e, "ROCE-MTU-002"), "enp27s0np0", Fail, "1024-byte packets although", "ibv_devinfo")
	e.Runner = toolRunner{"ibv_devinfo": {Stdout: read("ibv_devinfo_rxe0_mtu9000.txt")}}
	want(t, check(t, e, "ROCE-MTU-002"), "enp27s0np0", Pass, "from ibv_devinfo")
	// Missing tool, garbage output, a tool that failed: derived, and said.
	for name, r := range map[string]toolRunner{
		"missing": {},
		"garbage": {"ibv_devinfo": {Stdout: "active_mtu: \x00\xff"}},
		"failed":  {"ibv_devinfo": {ExitCode: 255, Stderr: "Failed to get IB devices list"}},
		"hung":    {"ibv_devinfo": {ExitCode: -1, TimedOut: true}},
	} {
		e.Runner = r
		res := want(t, check(t, e, "ROCE-MTU-002"), "enp27s0np0", Pass, "derived from the netdev MTU")
		if name == "failed" && res.Reason == "" {
			t.Error("no reason")
		}
	}
}
