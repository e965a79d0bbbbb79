package diag

import (
	"testing"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/nic/linkengine"
	"github.com/roce-agent/roce-agent/nic/linkengine/linktest"
	"github.com/roce-agent/roce-agent/nic/sysfstest"
	"github.com/roce-agent/roce-agent/qos"
)

// softRoCEConfig is a desired state for the soft-roce fixture tree: two
// rails on vethA and vethB with IPv4 and IPv6.
func softRoCEConfig(t *testing.T) agent.Config {
	c := agent.DefaultConfig()
	// A fresh tree: an apply with a qos profile writes configfs there.
	tree, err := sysfstest.SoftRoCE(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c.SysfsRoot = tree.Root()
	c.StateDir = t.TempDir()
	c.Node.Name = "fake-host"
	c.Link.Routes = []string{"10.200.0.0/16"}
	zero, one := 0, 1
	c.Rails = []agent.RailConfig{
		{Rail: &zero, Netdev: "vethA", IPv4: "10.0.0.1/31", IPv6: "fd00::1/127"},
		{Rail: &one, Netdev: "vethB", IPv4: "10.0.1.1/31", IPv6: "fd00::3/127"},
	}
	return c
}

// hostEnv is an Env over the soft-roce tree whose rails' kernel is a
// recording fake: converged by one apply, then broken by fault.
func hostEnv(t *testing.T, cfg agent.Config, dcb qos.DCBClient, fault func(*linktest.Host)) *Env {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	host := linktest.New()
	host.AddLink("vethA", 1500)
	host.AddLink("vethB", 1500)
	node, err := agent.OpenNode(agent.NodeOptions{Config: cfg, Host: host, DCB: dcb})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	if _, err := node.Apply(); err != nil {
		t.Fatal(err)
	}
	if fault != nil {
		fault(host)
	}
	node.MarkStale()
	fs, err := nic.NewFS(cfg.SysfsRoot)
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Config: cfg, Desired: true, FS: fs, ProcRoot: t.TempDir(), Node: node, Privileged: true, Live: true}
	e.Inventory, e.InventoryErr = agent.ReadInventory(cfg, nil)
	e.defaults()
	return e
}

func TestLinkChecksConverged(t *testing.T) {
	e := hostEnv(t, softRoCEConfig(t), nil, nil)
	for _, id := range []string{"NET-LINK-001", "ROCE-ADDR-001", "ROCE-MTU-001", "NET-ROUTE-001", "NET-SYSCTL-001"} {
		rs := check(t, e, id)
		all(t, rs, Pass)
		if len(rs) != 2 {
			t.Errorf("%s: %d results, want one per rail", id, len(rs))
		}
	}
}

func TestLinkChecksFaults(t *testing.T) {
	e := hostEnv(t, softRoCEConfig(t), nil, func(h *linktest.Host) {
		h.SetUp("vethA", false)
		h.SetMTU("vethB", 1500)
		h.DelAddr("vethA", "10.0.0.1/31")
		h.SetSysctl("net/ipv4/conf/vethB/rp_filter", "1")
		h.DelRule(h.Rules()[0].Priority)
	})
	want(t, check(t, e, "NET-LINK-001"), "vethA", Fail, "administratively down")
	rs := check(t, e, "ROCE-MTU-001")
	want(t, rs, "vethB", Fail, "1500", "9000")
	want(t, rs, "vethA", Pass)
	want(t, check(t, e, "ROCE-ADDR-001"), "vethA", Fail, "10.0.0.1/31", "ip address add")
	want(t, check(t, e, "NET-SYSCTL-001"), "vethB", Fail, "rp_filter=1 (want 2)")
	rs = check(t, e, "NET-ROUTE-001")
	if got := only(rs, "vethA")[0].Status + only(rs, "vethB")[0].Status; got != Fail+Pass && got != Pass+Fail {
		t.Errorf("one rule deleted: %s", got)
	}
}

func TestLinkChecksForeignAddressAndMissingNetdev(t *testing.T) {
	e := hostEnv(t, softRoCEConfig(t), nil, func(h *linktest.Host) {
		h.DelAddr("vethB", "10.0.1.1/31")
		h.AddForeignAddr("vethB", "10.0.1.0/31")
		h.DelLink("vethA")
	})
	want(t, check(t, e, "ROCE-ADDR-001"), "vethB", Fail, "foreign address 10.0.1.0/31")
	want(t, check(t, e, "NET-LINK-001"), "vethA", Fail, "absent", "does not exist")
	want(t, check(t, e, "ROCE-MTU-001"), "vethA", Skip, "NET-LINK-001")
}

func TestSysctlAllOverrides(t *testing.T) {
	e := hostEnv(t, softRoCEConfig(t), nil, nil)
	writeProc(t, e, "sys/net/ipv4/conf/all/arp_announce", "2")
	writeProc(t, e, "sys/net/ipv4/conf/all/arp_ignore", "8")
	rs := check(t, e, "NET-SYSCTL-001")
	want(t, rs, "vethA", Fail, "net.ipv4.conf.all.arp_ignore=8 overrides")
}

func TestLinkChecksWithoutDesiredState(t *testing.T) {
	e := hostEnv(t, softRoCEConfig(t), nil, nil)
	e.Desired = false
	want(t, check(t, e, "ROCE-MTU-001"), "node", Skip, "no desired state")
	e = dgx(t, nil)
	e.Desired = true
	want(t, check(t, e, "NET-ROUTE-001"), "node", Skip, "sysfs tree")
}

var _ = linkengine.AddrAdd

// Without a desired state the rails' sysctls are compared with the
// agent's rail policy: strict rp_filter fails, anything else warns.
func TestSysctlsWithoutDesiredState(t *testing.T) {
	e := dgx(t, nil)
	e.Live = true
	set := func(netdev string, v4 [3]string, keep string) {
		for i, k := range []string{"arp_ignore", "arp_announce", "rp_filter"} {
			writeProc(t, e, "sys/net/ipv4/conf/"+netdev+"/"+k, v4[i])
		}
		writeProc(t, e, "sys/net/ipv6/conf/"+netdev+"/keep_addr_on_down", keep)
	}
	for rail := 0; rail < sysfstest.DGXRails; rail++ {
		set(sysfstest.DGXNetdev(rail), [3]string{"1", "2", "2"}, "1")
	}
	set(sysfstest.DGXNetdev(1), [3]string{"0", "0", "2"}, "0")
	set(sysfstest.DGXNetdev(2), [3]string{"1", "2", "1"}, "1")
	rs := check(t, e, "NET-SYSCTL-001")
	want(t, rs, sysfstest.DGXNetdev(0), Pass, "rail policy")
	want(t, rs, sysfstest.DGXNetdev(1), Warn, "arp_ignore=0 (want 1)", "keep_addr_on_down=0")
	want(t, rs, sysfstest.DGXNetdev(2), Fail, "strict reverse-path")
	// net.ipv4.conf.all wins when larger.
	writeProc(t, e, "sys/net/ipv4/conf/all/arp_announce", "3")
	want(t, check(t, e, "NET-SYSCTL-001"), sysfstest.DGXNetdev(0), Warn, "arp_announce=3")
}
