package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/nic/sysfstest"
)

// Options configure a lab. The zero value is the default lab: 4 hosts of
// 8 rails on 2 leaves, DefaultPlan, prefix "rl-".
type Options struct {
	// Prefix starts the name of every namespace the lab makes (and of the
	// Expose link), so that labs with different prefixes coexist; default
	// DefaultPrefix. 1-12 characters of a-z, 0-9, '-', '_'.
	Prefix string
	// Plan is the fabric plan; nil uses DefaultPlan(Hosts). Host i is
	// plan node i (in list order): its namespace, management address and
	// leaf follow i, its rail addresses the node's index.
	Plan *v1.FabricPlan
	// Hosts is the number of hosts of the default plan (default
	// DefaultHosts); ignored when Plan is set.
	Hosts int
	// Leaves is the number of leaves (default DefaultLeaves, or the number
	// of hosts when smaller): host i attaches to leaf i*leaves/hosts.
	Leaves int
	// WorkDir holds the hosts' sysfs trees and, with processes, their
	// configs, state, certificates and logs. It must be absent (the lab
	// creates it and Down removes it) or empty (Down removes what the lab
	// put in it). Default DefaultWorkDir(Prefix).
	WorkDir string
	// MgmtSubnet is the management network (IPv4, /28 or larger); default
	// DefaultMgmtSubnet. The controller takes its first address, host i
	// the 10+i-th, the Expose link the last.
	MgmtSubnet netip.Prefix
	// Expose adds a veth named <prefix>mg to the caller's network
	// namespace, attached to the management bridge with the subnet's last
	// address, so that the controller and the agents' endpoints are
	// reachable without ip netns exec. Off, the lab makes nothing outside
	// its own namespaces.
	Expose bool
	// LLDP runs lldpd in the hosts' namespaces and the leaves' (docs/lab.md):
	// LLDPAuto (the default, ""), LLDPOn or LLDPOff. The plan's cabling
	// (nodes[].cabling) names, for nodes without one, each rail's leaf
	// (LeafName) and leaf port either way.
	LLDP string
}

// Fabric is a running lab topology (design in docs/lab.md): hosts with
// veth rails, leaves whose tenants are namespaces joined by VXLAN over a
// routed underlay and a spine, and a management network. Its methods are
// safe for concurrent use.
type Fabric struct {
	mu       sync.Mutex
	prefix   string
	plan     v1.FabricPlan
	mtu      int
	mgmt     netip.Prefix
	expose   bool
	workDir  string
	ownDir   bool
	tracked  []string // work dir entries the lab made, when it does not own the dir
	hosts    []*host
	leaves   []*leaf
	spine    *namespace
	mg       *namespace
	made     []*namespace // every namespace made and not yet deleted, in order
	tenantK  map[string]int
	exposeUp bool
	down     bool
	lldp     *lldpSet
}

type host struct {
	node    v1.PlanNode
	ns      *namespace
	leaf    int
	sysfs   string
	netdevs []string
	ports   []string // leaf port name per rail
	addrs   []railAddrs
	at      []*namespace // the namespace each leaf port is in now
	// cable is the leaf port (its index in ports) each rail reaches: the
	// rail's own, but after SwapRails.
	cable []int
}

type leaf struct {
	under   *namespace
	park    *namespace
	tenants map[string]*tenantNS // by tenant ID
}

// tenantNS is a tenant's namespace on a leaf: the VRF.
type tenantNS struct {
	id  string
	k   int
	vni int
	ns  *namespace
	vx  string
}

// Up builds the topology of o: namespaces, links, addresses, tenants and
// routes, and the hosts' sysfs trees; no process. Hosts' rails are left
// down and unaddressed for an agent (or a test) to configure. If it fails
// midway, it removes what it made.
func Up(o Options) (_ *Fabric, err error) {
	f, err := newFabric(o)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if derr := f.Down(); derr != nil {
				err = errors.Join(err, fmt.Errorf("clean up: %w", derr))
			}
		}
	}()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.prepareWorkDir(); err != nil {
		return nil, err
	}
	if err := f.writeTrees(); err != nil {
		return nil, err
	}
	if err := f.buildCore(); err != nil {
		return nil, err
	}
	if err := f.buildMgmt(); err != nil {
		return nil, err
	}
	want := f.placement(f.plan)
	if err := f.ensureTenants(f.plan, want); err != nil {
		return nil, err
	}
	if err := f.buildRails(want); err != nil {
		return nil, err
	}
	if err := f.sync(f.plan); err != nil {
		return nil, err
	}
	if err := f.startLLDP(); err != nil {
		return nil, err
	}
	return f, nil
}

func newFabric(o Options) (*Fabric, error) {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if err := checkPrefix(o.Prefix); err != nil {
		return nil, err
	}
	var plan v1.FabricPlan
	if o.Plan != nil {
		plan = clonePlan(*o.Plan)
	} else {
		if o.Hosts == 0 {
			o.Hosts = DefaultHosts
		}
		if o.Hosts < 1 {
			return nil, fmt.Errorf("hosts: %d, want at least 1", o.Hosts)
		}
		plan = DefaultPlan(o.Hosts)
	}
	if err := checkPlan(plan); err != nil {
		return nil, fmt.Errorf("check plan: %w", err)
	}
	hosts := len(plan.Nodes)
	if o.Leaves == 0 {
		o.Leaves = min(DefaultLeaves, hosts)
	}
	if o.Leaves < 1 || o.Leaves > hosts || o.Leaves > MaxLeaves {
		return nil, fmt.Errorf("leaves: %d, want 1-%d (at most one per host)", o.Leaves, min(hosts, MaxLeaves))
	}
	if !o.MgmtSubnet.IsValid() {
		o.MgmtSubnet = DefaultMgmtSubnet
	}
	o.MgmtSubnet = o.MgmtSubnet.Masked()
	if !o.MgmtSubnet.Addr().Is4() || o.MgmtSubnet.Bits() > 28 {
		return nil, fmt.Errorf("mgmt subnet %s: want an IPv4 subnet of /28 or larger", o.MgmtSubnet)
	}
	if last := mgmtAddrOf(o.MgmtSubnet, hosts-1); !o.MgmtSubnet.Contains(last) || last.Compare(lastHost(o.MgmtSubnet)) >= 0 {
		return nil, fmt.Errorf("mgmt subnet %s: no room for %d hosts (host i takes address 10+i)", o.MgmtSubnet, hosts)
	}
	if err := checkOverlaps(plan, o.MgmtSubnet); err != nil {
		return nil, err
	}
	if o.WorkDir == "" {
		o.WorkDir = DefaultWorkDir(o.Prefix)
	}
	wd, err := filepath.Abs(o.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	if left, err := leftovers(o.Prefix); err != nil {
		return nil, err
	} else if len(left) > 0 {
		return nil, fmt.Errorf("netns %s exists: a lab with prefix %q is up, or a crashed one left it (lab.Cleanup, roce-lab --cleanup)", left[0], o.Prefix)
	}
	mtu := plan.Link.MTU
	if mtu == 0 {
		mtu = 9000
	}
	f := &Fabric{
		prefix: o.Prefix, plan: plan, mtu: mtu, mgmt: o.MgmtSubnet, expose: o.Expose,
		workDir: wd, tenantK: map[string]int{},
	}
	for i, n := range plan.Nodes {
		h := &host{node: n, leaf: i * o.Leaves / hosts, at: make([]*namespace, plan.Rails)}
		if len(n.Cabling) == 0 {
			h.node.Cabling = labCabling(i, h.leaf, plan.Rails)
			f.plan.Nodes[i].Cabling = h.node.Cabling
		}
		h.sysfs = filepath.Join(wd, "hosts", n.Name, "sys")
		for r := 0; r < plan.Rails; r++ {
			a, err := planAddrs(plan, n.Index, r)
			if err != nil {
				return nil, fmt.Errorf("node %s rail %d: %w", n.Name, r, err)
			}
			h.addrs = append(h.addrs, a)
			h.netdevs = append(h.netdevs, sysfstest.DGXNetdev(r))
			h.ports = append(h.ports, leafPortName(i, r))
			h.cable = append(h.cable, r)
		}
		f.hosts = append(f.hosts, h)
	}
	for l := 0; l < o.Leaves; l++ {
		f.leaves = append(f.leaves, &leaf{tenants: map[string]*tenantNS{}})
	}
	if err := f.setupLLDP(o.LLDP); err != nil {
		return nil, err
	}
	return f, nil
}

// underlayNet is the lab's underlay: VTEP loopbacks and leaf-spine links.
var underlayNet = netip.MustParsePrefix("10.254.0.0/16")

// checkOverlaps refuses rail pools that overlap the underlay or the
// management subnet (a host holds both its rails and mgmt0).
func checkOverlaps(p v1.FabricPlan, mgmt netip.Prefix) error {
	var errs []error
	for n, pool := range v1.ParsePools(p.Addressing.IPv4Pools, false) {
		if !pool.IsValid() {
			continue
		}
		if pool.Overlaps(underlayNet) {
			errs = append(errs, fmt.Errorf("addressing.ipv4_pools[%d]: %s overlaps the lab's underlay %s", n, pool, underlayNet))
		}
		if pool.Overlaps(mgmt) {
			errs = append(errs, fmt.Errorf("addressing.ipv4_pools[%d]: %s overlaps the management subnet %s", n, pool, mgmt))
		}
	}
	return errors.Join(errs...)
}

func clonePlan(p v1.FabricPlan) v1.FabricPlan {
	q := p
	q.Nodes = append([]v1.PlanNode(nil), p.Nodes...)
	for i := range q.Nodes {
		q.Nodes[i].Cabling = append([]v1.RailCabling(nil), q.Nodes[i].Cabling...)
	}
	q.Addressing.IPv4Pools = append([]string(nil), p.Addressing.IPv4Pools...)
	q.Addressing.IPv6Pools = append([]string(nil), p.Addressing.IPv6Pools...)
	q.Link.Routes = append([]string(nil), p.Link.Routes...)
	q.Tenants = nil
	for _, t := range p.Tenants {
		c := t
		c.Members = nil
		for _, m := range t.Members {
			c.Members = append(c.Members, v1.TenantMember{Node: m.Node, GPUs: append([]int(nil), m.GPUs...)})
		}
		q.Tenants = append(q.Tenants, c)
	}
	return q
}

// leftovers lists the namespaces of a lab with this prefix that exist.
func leftovers(prefix string) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", netnsDir, err)
	}
	re := labNSRE(prefix)
	var out []string
	for _, e := range entries {
		if re.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// prepareWorkDir creates the work dir, or takes an empty one, and marks
// it as the lab's.
func (f *Fabric) prepareWorkDir() error {
	st, err := os.Stat(f.workDir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(f.workDir, 0o755); err != nil {
			return fmt.Errorf("create work dir: %w", err)
		}
		f.ownDir = true
	case err != nil:
		return fmt.Errorf("work dir: %w", err)
	case !st.IsDir():
		return fmt.Errorf("work dir %s: not a directory", f.workDir)
	default:
		entries, err := os.ReadDir(f.workDir)
		if err != nil {
			return fmt.Errorf("work dir: %w", err)
		}
		if len(entries) > 0 {
			if _, err := os.Stat(filepath.Join(f.workDir, markerFile)); err == nil {
				return fmt.Errorf("work dir %s holds a lab already (a crashed one? lab.Cleanup, roce-lab --cleanup)", f.workDir)
			}
			return fmt.Errorf("work dir %s is not empty", f.workDir)
		}
	}
	return f.writeFile(markerFile, []byte(f.prefix+"\n"))
}

// track records a work dir entry the lab made (its first path element).
func (f *Fabric) track(rel string) {
	top := strings.SplitN(filepath.ToSlash(rel), "/", 2)[0]
	for _, t := range f.tracked {
		if t == top {
			return
		}
	}
	f.tracked = append(f.tracked, top)
}

// path is a path in the work dir.
func (f *Fabric) path(rel ...string) string {
	return filepath.Join(append([]string{f.workDir}, rel...)...)
}

// mkdir creates a directory in the work dir.
func (f *Fabric) mkdir(rel string) (string, error) {
	f.track(rel)
	p := f.path(rel)
	if err := os.MkdirAll(p, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", p, err)
	}
	return p, nil
}

// writeFile writes a file in the work dir.
func (f *Fabric) writeFile(rel string, data []byte) error {
	f.track(rel)
	p := f.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(p), err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// writeTrees builds each host's DGX-like sysfs tree, with the rails' MACs
// and the planned host addresses in the GID tables (in parallel: a tree
// is some 2,000 files, links and directories).
func (f *Fabric) writeTrees() error {
	f.track("hosts")
	errs := make([]error, len(f.hosts))
	var wg sync.WaitGroup
	for i, h := range f.hosts {
		dh := sysfstest.DGXHost{Node: h.node.Name, MgmtNetdev: MgmtNetdev, MgmtMAC: mgmtMAC(i).String()}
		for r, a := range h.addrs {
			dh.Rails = append(dh.Rails, sysfstest.DGXRail{MAC: railMAC(i, r).String(), IPs: []string{a.hostV4.Addr().String(), a.hostV6.Addr().String()}})
		}
		wg.Go(func() {
			if _, err := sysfstest.DGX(filepath.Dir(h.sysfs), dh); err != nil {
				errs[i] = fmt.Errorf("write sysfs tree of %s: %w", h.node.Name, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// newNS creates a namespace, records it and sets its sysctls (before any
// device arrives: a device takes the namespace's defaults).
func (f *Fabric) newNS(name string, sysctls ...string) (*namespace, error) {
	ns, err := createNamespace(name)
	if err != nil {
		return nil, err
	}
	f.made = append(f.made, ns)
	if len(sysctls) > 0 {
		if err := setSysctls(ns, sysctls...); err != nil {
			return nil, err
		}
	}
	return ns, nil
}

// Sysctls of the namespaces: IPv4 conf/all and conf/default are inherited
// from the caller's namespace (rp_filter may be strict there), IPv6 ones
// are the kernel's defaults (DAD on).
var (
	quietSysctls = []string{
		"net.ipv4.conf.all.rp_filter", "0", "net.ipv4.conf.default.rp_filter", "0",
		"net.ipv6.conf.all.accept_dad", "0", "net.ipv6.conf.default.accept_dad", "0",
	}
	routerSysctls = append([]string{"net.ipv4.ip_forward", "1", "net.ipv6.conf.all.forwarding", "1"}, quietSysctls...)
)

// buildCore makes the spine, the leaves' underlay and parking namespaces
// and the hosts' namespaces, and the routed underlay: per leaf a /31 to
// the spine and a VTEP loopback, the spine routing each VTEP.
func (f *Fabric) buildCore() error {
	var err error
	if f.spine, err = f.newNS(spineNSName(f.prefix), routerSysctls...); err != nil {
		return err
	}
	if err := f.addAddr(f.spine, "lo", hostPrefix(spineLoopback())); err != nil {
		return err
	}
	umtu := f.mtu + underlayExtraMTU
	for l, lf := range f.leaves {
		if lf.under, err = f.newNS(leafNSName(f.prefix, l), routerSysctls...); err != nil {
			return err
		}
		if lf.park, err = f.newNS(parkNSName(f.prefix, l), routerSysctls...); err != nil {
			return err
		}
		if err := f.veth(lf.under, spineLink, f.spine, spinePortName(l), umtu, nil); err != nil {
			return err
		}
		if err := f.addAddr(lf.under, "lo", hostPrefix(vtepAddr(l))); err != nil {
			return err
		}
		if err := f.addAddr(lf.under, spineLink, leafLinkAddr(l)); err != nil {
			return err
		}
		if err := f.addAddr(f.spine, spinePortName(l), spineLinkAddr(l)); err != nil {
			return err
		}
		if err := f.setUp(lf.under, spineLink); err != nil {
			return err
		}
		if err := f.setUp(f.spine, spinePortName(l)); err != nil {
			return err
		}
		// Equivalent to: ip -n <leaf> route add default via <spine>
		def := &netlink.Route{Dst: ipnet(netip.MustParsePrefix("0.0.0.0/0")), Gw: spineLinkAddr(l).Addr().AsSlice(), Protocol: unix.RTPROT_STATIC}
		if err := lf.under.nl.RouteReplace(def); err != nil {
			return fmt.Errorf("add default route in netns %s: %w", lf.under.name, err)
		}
		// Equivalent to: ip -n <spine> route add <vtep>/32 via <leaf>
		r := &netlink.Route{Dst: ipnet(hostPrefix(vtepAddr(l))), Gw: leafLinkAddr(l).Addr().AsSlice(), Protocol: unix.RTPROT_STATIC}
		if err := f.spine.nl.RouteReplace(r); err != nil {
			return fmt.Errorf("add route to vtep %s in netns %s: %w", vtepAddr(l), f.spine.name, err)
		}
	}
	for i, h := range f.hosts {
		if h.ns, err = f.newNS(hostNSName(f.prefix, i)); err != nil {
			return err
		}
	}
	return nil
}

// buildMgmt makes the management namespace with a bridge holding the
// controller's address, each host's mgmt0 on it, and the Expose link.
func (f *Fabric) buildMgmt() error {
	var err error
	if f.mg, err = f.newNS(mgmtNSName(f.prefix), quietSysctls...); err != nil {
		return err
	}
	// Equivalent to: ip -n <mg> link add br0 type bridge
	br := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
	br.Name = mgmtBridge
	if err := f.mg.nl.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge in netns %s: %w", f.mg.name, err)
	}
	ctl := netip.PrefixFrom(controllerAddrOf(f.mgmt), f.mgmt.Bits())
	if err := f.addAddr(f.mg, mgmtBridge, ctl); err != nil {
		return err
	}
	if err := f.setUp(f.mg, mgmtBridge); err != nil {
		return err
	}
	for i, h := range f.hosts {
		if err := f.veth(h.ns, MgmtNetdev, f.mg, mgmtPortName(i), 1500, mgmtMAC(i)); err != nil {
			return err
		}
		if err := f.bridgePort(mgmtPortName(i)); err != nil {
			return err
		}
		if err := f.addAddr(h.ns, MgmtNetdev, netip.PrefixFrom(mgmtAddrOf(f.mgmt, i), f.mgmt.Bits())); err != nil {
			return err
		}
		if err := f.setUp(h.ns, MgmtNetdev); err != nil {
			return err
		}
	}
	if f.expose {
		return f.buildExpose()
	}
	return nil
}

// buildExpose adds <prefix>mg to the caller's namespace, its peer on the
// management bridge.
func (f *Fabric) buildExpose() error {
	self, err := netns.GetFromPid(os.Getpid())
	if err != nil {
		return fmt.Errorf("open own netns: %w", err)
	}
	defer self.Close()
	nh, err := netlink.NewHandleAt(self)
	if err != nil {
		return fmt.Errorf("netlink in own netns: %w", err)
	}
	defer nh.Close()
	name := exposeLinkName(f.prefix)
	if _, err := nh.LinkByName(name); err == nil {
		return fmt.Errorf("expose: a link %s exists already", name)
	}
	v := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: name, PeerNamespace: netlink.NsFd(self)}
	v.Name, v.MTU = "expose", 1500
	if err := f.mg.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth %s: %w", name, err)
	}
	f.exposeUp = true
	if err := f.bridgePort("expose"); err != nil {
		return err
	}
	link, err := nh.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	a := netip.PrefixFrom(exposeAddrOf(f.mgmt), f.mgmt.Bits())
	if err := nh.AddrReplace(link, &netlink.Addr{IPNet: ipnet(a)}); err != nil {
		return fmt.Errorf("add %s to %s: %w", a, name, err)
	}
	if err := nh.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

func (f *Fabric) bridgePort(name string) error {
	br, err := f.mg.nl.LinkByName(mgmtBridge)
	if err != nil {
		return fmt.Errorf("find %s in netns %s: %w", mgmtBridge, f.mg.name, err)
	}
	port, err := f.mg.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s in netns %s: %w", name, f.mg.name, err)
	}
	// Equivalent to: ip -n <mg> link set $name master br0 up
	if err := f.mg.nl.LinkSetMasterByIndex(port, br.Attrs().Index); err != nil {
		return fmt.Errorf("attach %s to %s: %w", name, mgmtBridge, err)
	}
	if err := f.mg.nl.LinkSetUp(port); err != nil {
		return fmt.Errorf("set %s up in netns %s: %w", name, f.mg.name, err)
	}
	return nil
}

// buildRails makes each host's rails: a veth whose host end carries the
// tree's netdev name and MAC (MTU set, left down, no address) and whose
// leaf end starts in the namespace the plan puts it in.
func (f *Fabric) buildRails(want [][]string) error {
	for i, h := range f.hosts {
		for r := range h.netdevs {
			dst := f.portHome(h.leaf, want[i][r])
			if err := f.veth(h.ns, h.netdevs[r], dst, h.ports[r], f.mtu, railMAC(i, r)); err != nil {
				return err
			}
			h.at[r] = dst
		}
	}
	return nil
}

// veth makes a veth pair: a in ns a, b in ns b, both with the MTU, a's
// MAC set when mac is not nil.
// Equivalent to: ip -n $a link add $aName mtu $mtu type veth peer name $bName netns $b mtu $mtu
func (f *Fabric) veth(a *namespace, aName string, b *namespace, bName string, mtu int, mac net.HardwareAddr) error {
	v := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: bName, PeerNamespace: b.fd(), PeerMTU: uint32(mtu)}
	v.Name, v.MTU, v.HardwareAddr = aName, mtu, mac
	if err := a.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth %s (netns %s) - %s (netns %s): %w", aName, a.name, bName, b.name, err)
	}
	return nil
}

// addAddr adds an address (IPv6 without DAD).
// Equivalent to: ip -n $ns address replace $a dev $dev [nodad]
func (f *Fabric) addAddr(ns *namespace, dev string, a netip.Prefix) error {
	link, err := ns.nl.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("find %s in netns %s: %w", dev, ns.name, err)
	}
	addr := &netlink.Addr{IPNet: ipnet(a)}
	if a.Addr().Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := ns.nl.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("add %s to %s in netns %s: %w", a, dev, ns.name, err)
	}
	return nil
}

// setUp brings a link up.
// Equivalent to: ip -n $ns link set $dev up
func (f *Fabric) setUp(ns *namespace, dev string) error {
	link, err := ns.nl.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("find %s in netns %s: %w", dev, ns.name, err)
	}
	if err := ns.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up in netns %s: %w", dev, ns.name, err)
	}
	return nil
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Down removes every namespace the lab made (their links go with them),
// the Expose link and the work dir (or, in a work dir it did not create,
// what it put there). It works after a partial Up and can be called again.
func (f *Fabric) Down() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	// An lldpd holds its namespace: stop them first.
	if err := f.stopLLDP(); err != nil {
		errs = append(errs, err)
	}
	for i := len(f.made) - 1; i >= 0; i-- {
		ns := f.made[i]
		ns.close()
		if err := deleteNamespace(ns.name); err != nil {
			errs = append(errs, err)
		}
	}
	f.made = nil
	if f.exposeUp {
		if err := deleteExposeLink(f.prefix); err != nil {
			errs = append(errs, err)
		}
		f.exposeUp = false
	}
	if f.ownDir {
		if err := os.RemoveAll(f.workDir); err != nil {
			errs = append(errs, fmt.Errorf("remove work dir: %w", err))
		}
	} else {
		for i := len(f.tracked) - 1; i >= 0; i-- {
			if err := os.RemoveAll(f.path(f.tracked[i])); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", f.path(f.tracked[i]), err))
			}
		}
	}
	f.tracked = nil
	f.down = true
	return errors.Join(errs...)
}

// deleteExposeLink deletes <prefix>mg from the caller's namespace, if it
// is there and a veth.
func deleteExposeLink(prefix string) error {
	name := exposeLinkName(prefix)
	self, err := netns.GetFromPid(os.Getpid())
	if err != nil {
		return fmt.Errorf("open own netns: %w", err)
	}
	defer self.Close()
	nh, err := netlink.NewHandleAt(self)
	if err != nil {
		return fmt.Errorf("netlink in own netns: %w", err)
	}
	defer nh.Close()
	link, err := nh.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find %s: %w", name, err)
	}
	if link.Type() != "veth" {
		return nil
	}
	if err := nh.LinkDel(link); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}
