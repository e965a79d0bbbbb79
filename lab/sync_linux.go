package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// placement is each host rail's tenant ID in a plan ("" for none).
func (f *Fabric) placement(p v1.FabricPlan) [][]string {
	rt := railTenants(p)
	out := make([][]string, len(f.hosts))
	for i, h := range f.hosts {
		out[i] = make([]string, p.Rails)
		for r := range out[i] {
			if ti, ok := rt[h.node.Name][r]; ok {
				out[i][r] = p.Tenants[ti].ID
			}
		}
	}
	return out
}

// portHome is the namespace a leaf port of a tenant ("" for none) belongs
// in on leaf l.
func (f *Fabric) portHome(l int, tenant string) *namespace {
	if tenant == "" {
		return f.leaves[l].park
	}
	return f.leaves[l].tenants[tenant].ns
}

// Sync makes the leaves follow a plan, as a fabric's own controller does
// after a tenant change: each leaf port moves to the namespace of its
// rail's tenant (or the parking namespace), new tenants get their
// namespaces and VXLAN devices on the leaves that have their rails,
// tenants gone from a leaf lose theirs, and every tenant's Type-5 routes
// are rewritten. Nodes, their indexes, the rails and the pools must be
// those of Up: only tenants change. Running it again changes nothing.
func (f *Fabric) Sync(p v1.FabricPlan) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errors.New("sync: the lab is down")
	}
	p = clonePlan(p)
	if err := checkPlan(p); err != nil {
		return fmt.Errorf("sync: check plan: %w", err)
	}
	if err := f.sameFabric(p); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	// The cabling is Up's: the leaves' ports do not move between leaves.
	for i := range p.Nodes {
		p.Nodes[i].Cabling = f.plan.Nodes[i].Cabling
	}
	if err := f.sync(p); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

// sameFabric refuses a plan that changes what Up built.
func (f *Fabric) sameFabric(p v1.FabricPlan) error {
	if p.Rails != f.plan.Rails {
		return fmt.Errorf("the plan has %d rails, the lab %d", p.Rails, f.plan.Rails)
	}
	if len(p.Nodes) != len(f.plan.Nodes) {
		return fmt.Errorf("the plan has %d nodes, the lab %d", len(p.Nodes), len(f.plan.Nodes))
	}
	for i, n := range p.Nodes {
		if n.Name != f.plan.Nodes[i].Name || n.Index != f.plan.Nodes[i].Index {
			return fmt.Errorf("nodes[%d] is %s (index %d), the lab's %s (index %d)", i, n.Name, n.Index, f.plan.Nodes[i].Name, f.plan.Nodes[i].Index)
		}
	}
	if strings.Join(p.Addressing.IPv4Pools, ",") != strings.Join(f.plan.Addressing.IPv4Pools, ",") ||
		strings.Join(p.Addressing.IPv6Pools, ",") != strings.Join(f.plan.Addressing.IPv6Pools, ",") {
		return errors.New("the plan's addressing pools differ from the lab's")
	}
	return nil
}

func (f *Fabric) sync(p v1.FabricPlan) error {
	want := f.placement(p)
	before := map[*host][]*namespace{}
	for _, h := range f.hosts {
		before[h] = append([]*namespace(nil), h.at...)
	}
	if err := f.dropTenants(p, want); err != nil {
		return err
	}
	if err := f.ensureTenants(p, want); err != nil {
		return err
	}
	for i, h := range f.hosts {
		for r := range h.ports {
			dst := f.portHome(h.leaf, want[i][r])
			if h.at[r] != dst {
				if err := f.movePort(h, r, dst); err != nil {
					return err
				}
			}
			if err := f.configurePort(h, r); err != nil {
				return err
			}
		}
	}
	moved := map[*host][]int{}
	for _, h := range f.hosts {
		for r := range h.ports {
			if before[h][r] != nil && h.at[r] != before[h][r] {
				moved[h] = append(moved[h], r)
			}
		}
	}
	for l, lf := range f.leaves {
		for _, tn := range lf.tenants {
			if err := f.syncRoutes(l, tn, want); err != nil {
				return err
			}
		}
	}
	f.plan = p
	// A moved port went down and up: wait for the link watch (see
	// WaitRailsUp) where the host end is up, so that the rail works when
	// Sync returns.
	for h, rails := range moved {
		if err := f.waitPortsUp(h, rails, 5*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// tenantLeaves is, per tenant ID, the set of leaves with its rails.
func (f *Fabric) tenantLeaves(want [][]string) map[string]map[int]bool {
	out := map[string]map[int]bool{}
	for i, h := range f.hosts {
		for _, t := range want[i] {
			if t == "" {
				continue
			}
			if out[t] == nil {
				out[t] = map[int]bool{}
			}
			out[t][h.leaf] = true
		}
	}
	return out
}

// dropTenants removes the tenant namespaces a plan no longer needs on a
// leaf (or whose VNI changed): their ports go to the parking namespace
// first, then the VXLAN device and the namespace are deleted.
func (f *Fabric) dropTenants(p v1.FabricPlan, want [][]string) error {
	need := f.tenantLeaves(want)
	vni := map[string]int{}
	for _, t := range p.Tenants {
		vni[t.ID] = t.VNI
	}
	for l, lf := range f.leaves {
		for _, id := range sortedKeys(lf.tenants) {
			tn := lf.tenants[id]
			if need[id][l] && vni[id] == tn.vni {
				continue
			}
			for _, h := range f.hosts {
				for r := range h.ports {
					if h.at[r] == tn.ns {
						if err := f.movePort(h, r, lf.park); err != nil {
							return err
						}
						if err := f.configurePort(h, r); err != nil {
							return err
						}
					}
				}
			}
			if link, err := tn.ns.nl.LinkByName(tn.vx); err == nil {
				// Delete it now: the namespace's devices go asynchronously,
				// and a new VXLAN device with this VNI may follow at once.
				if err := tn.ns.nl.LinkDel(link); err != nil {
					return fmt.Errorf("delete %s in netns %s: %w", tn.vx, tn.ns.name, err)
				}
			}
			if err := f.deleteNS(tn.ns); err != nil {
				return err
			}
			delete(lf.tenants, id)
		}
	}
	for id := range f.tenantK {
		if _, ok := vni[id]; !ok {
			delete(f.tenantK, id)
		}
	}
	return nil
}

// deleteNS deletes a namespace the lab made and forgets it.
func (f *Fabric) deleteNS(ns *namespace) error {
	// An lldpd holds its namespace (and the devices in it).
	if err := f.stopLLDPIn(ns.name); err != nil {
		return err
	}
	ns.close()
	err := deleteNamespace(ns.name)
	for i, m := range f.made {
		if m == ns {
			f.made = append(f.made[:i], f.made[i+1:]...)
			break
		}
	}
	return err
}

// ensureTenants creates, on each leaf with a tenant's rails, the tenant's
// namespace and its VXLAN device: made in the leaf's underlay namespace
// (local VTEP, port 4789, no learning, the router MAC) so that it
// encapsulates there, then moved into the tenant's namespace.
func (f *Fabric) ensureTenants(p v1.FabricPlan, want [][]string) error {
	need := f.tenantLeaves(want)
	for _, t := range p.Tenants {
		for l, lf := range f.leaves {
			if !need[t.ID][l] || lf.tenants[t.ID] != nil {
				continue
			}
			k, ok := f.tenantK[t.ID]
			if !ok {
				k = f.freeK()
				f.tenantK[t.ID] = k
			}
			ns, err := f.newNS(tenantNSName(f.prefix, l, k), routerSysctls...)
			if err != nil {
				return err
			}
			tn := &tenantNS{id: t.ID, k: k, vni: t.VNI, ns: ns, vx: vxlanName(t.VNI)}
			lf.tenants[t.ID] = tn
			if err := f.addVXLAN(l, tn); err != nil {
				return err
			}
			if err := f.startLLDPIn(ns); err != nil {
				return err
			}
		}
	}
	return nil
}

// freeK is the lowest tenant number no tenant uses.
func (f *Fabric) freeK() int {
	used := map[int]bool{}
	for _, k := range f.tenantK {
		used[k] = true
	}
	k := 0
	for used[k] {
		k++
	}
	return k
}

// addVXLAN makes a tenant's L3 VNI device on leaf l.
// Equivalent to:
//
//	ip -n <leaf> link add vni<N> address <rmac> mtu <mtu> type vxlan id <N> local <vtep> dstport 4789 nolearning
//	ip -n <leaf> link set vni<N> netns <tenant>
//	ip -n <tenant> link set vni<N> up
func (f *Fabric) addVXLAN(l int, tn *tenantNS) error {
	under := f.leaves[l].under
	vx := &netlink.Vxlan{LinkAttrs: netlink.NewLinkAttrs(), VxlanId: tn.vni, SrcAddr: vtepAddr(l).AsSlice(), Port: vxlanPort, Learning: false}
	vx.Name, vx.MTU, vx.HardwareAddr = tn.vx, f.mtu, routerMAC(l, tn.vni)
	if err := under.nl.LinkAdd(vx); err != nil {
		return fmt.Errorf("add %s in netns %s: %w", tn.vx, under.name, err)
	}
	link, err := under.nl.LinkByName(tn.vx)
	if err != nil {
		return fmt.Errorf("find %s in netns %s: %w", tn.vx, under.name, err)
	}
	if err := under.nl.LinkSetNsFd(link, int(tn.ns.h)); err != nil {
		_ = under.nl.LinkDel(link)
		return fmt.Errorf("move %s to netns %s: %w", tn.vx, tn.ns.name, err)
	}
	return f.setUp(tn.ns, tn.vx)
}

// movePort moves rail r's leaf port to another namespace of its leaf.
// Equivalent to: ip -n $from link set $port netns $to
func (f *Fabric) movePort(h *host, r int, dst *namespace) error {
	src := h.at[r]
	link, err := src.nl.LinkByName(h.ports[r])
	if err != nil {
		return fmt.Errorf("find %s in netns %s: %w", h.ports[r], src.name, err)
	}
	if err := src.nl.LinkSetNsFd(link, int(dst.h)); err != nil {
		return fmt.Errorf("move %s from netns %s to %s: %w", h.ports[r], src.name, dst.name, err)
	}
	h.at[r] = dst
	return nil
}

// leafLinkLocal is every leaf port's own IPv6 link-local address. The
// kernel generates one only once the port has carrier, and then through
// the (up to a second) delayed link watch; until then the leaf cannot
// send the neighbour solicitations it needs to forward to a host, so the
// first IPv6 packet to a freshly configured host rail would wait for a
// retransmission. A static one is there from the start.
var leafLinkLocal = netip.MustParsePrefix("fe80::1/64")

// configurePort gives a leaf port its MTU, leaf addresses and link-local
// address and brings it up, where it is.
func (f *Fabric) configurePort(h *host, r int) error {
	ns, port := h.at[r], h.ports[r]
	link, err := ns.nl.LinkByName(port)
	if err != nil {
		return fmt.Errorf("find %s in netns %s: %w", port, ns.name, err)
	}
	if link.Attrs().MTU != f.mtu {
		if err := ns.nl.LinkSetMTU(link, f.mtu); err != nil {
			return fmt.Errorf("set mtu of %s in netns %s: %w", port, ns.name, err)
		}
	}
	have, err := ns.nl.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s in netns %s: %w", port, ns.name, err)
	}
	for _, a := range []netip.Prefix{h.addrs[r].leafV4, h.addrs[r].leafV6, leafLinkLocal} {
		if hasAddr(have, a) {
			continue
		}
		if err := f.addAddr(ns, port, a); err != nil {
			return err
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := ns.nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up in netns %s: %w", port, ns.name, err)
		}
	}
	return nil
}

func hasAddr(list []netlink.Addr, a netip.Prefix) bool {
	for _, x := range list {
		ip, ok := netip.AddrFromSlice(x.IP)
		ones, _ := x.Mask.Size()
		if ok && ip.Unmap() == a.Addr() && ones == a.Bits() {
			return true
		}
	}
	return false
}

// syncRoutes writes a tenant's EVPN Type-5 state on leaf l, what zebra
// installs for Type-5 routes learned from the other leaves: for every
// rail of the tenant behind another leaf, its /31 via that leaf's VTEP
// (onlink) and its /127 via that leaf's link-local address on the VNI,
// both on the VXLAN device; for every such leaf, permanent neighbours of
// both next hops at its router MAC and an fdb entry sending that MAC to
// its VTEP. Stale entries go.
func (f *Fabric) syncRoutes(l int, tn *tenantNS, want [][]string) error {
	ns := tn.ns
	vx, err := ns.nl.LinkByName(tn.vx)
	if err != nil {
		return fmt.Errorf("find %s in netns %s: %w", tn.vx, ns.name, err)
	}
	idx := vx.Attrs().Index
	routes := map[netip.Prefix]netlink.Route{}
	remote := map[int]bool{}
	for i, h := range f.hosts {
		if h.leaf == l {
			continue
		}
		for r, t := range want[i] {
			if t != tn.id {
				continue
			}
			remote[h.leaf] = true
			a := h.addrs[r]
			v4 := a.leafV4.Masked()
			routes[v4] = netlink.Route{LinkIndex: idx, Dst: ipnet(v4), Gw: vtepAddr(h.leaf).AsSlice(), Flags: int(netlink.FLAG_ONLINK), Protocol: unix.RTPROT_STATIC}
			v6 := a.leafV6.Masked()
			routes[v6] = netlink.Route{LinkIndex: idx, Dst: ipnet(v6), Gw: linkLocal(routerMAC(h.leaf, tn.vni)).AsSlice(), Protocol: unix.RTPROT_STATIC}
		}
	}
	// Neighbours and fdb first: a route's next hop resolves at once.
	neighs := map[netip.Addr]net.HardwareAddr{}
	fdb := map[string]netip.Addr{}
	for rl := range remote {
		mac := routerMAC(rl, tn.vni)
		neighs[vtepAddr(rl)] = mac
		neighs[linkLocal(mac)] = mac
		fdb[mac.String()] = vtepAddr(rl)
	}
	have, err := ns.nl.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("list fdb of %s in netns %s: %w", tn.vx, ns.name, err)
	}
	for _, n := range have {
		ip, _ := netip.AddrFromSlice(n.IP)
		if dst, ok := fdb[n.HardwareAddr.String()]; ok && dst == ip.Unmap() {
			delete(fdb, n.HardwareAddr.String())
			continue
		}
		if n.HardwareAddr == nil {
			continue
		}
		del := n
		if err := ns.nl.NeighDel(&del); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete fdb %s dst %s on %s in netns %s: %w", n.HardwareAddr, n.IP, tn.vx, ns.name, err)
		}
	}
	for _, mac := range sortedKeys(fdb) {
		hw, _ := net.ParseMAC(mac)
		// Equivalent to: bridge -n <tenant> fdb replace <rmac> dev vni<N> dst <vtep> self permanent
		n := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, HardwareAddr: hw, IP: fdb[mac].AsSlice()}
		if err := ns.nl.NeighSet(n); err != nil {
			return fmt.Errorf("add fdb %s dst %s on %s in netns %s: %w", mac, fdb[mac], tn.vx, ns.name, err)
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		have, err := ns.nl.NeighList(idx, fam)
		if err != nil {
			return fmt.Errorf("list neighbours of %s in netns %s: %w", tn.vx, ns.name, err)
		}
		for _, n := range have {
			ip, _ := netip.AddrFromSlice(n.IP)
			ip = ip.Unmap()
			if mac, ok := neighs[ip]; ok && mac.String() == n.HardwareAddr.String() && n.State&netlink.NUD_PERMANENT != 0 {
				delete(neighs, ip)
				continue
			}
			if n.State&netlink.NUD_PERMANENT == 0 {
				continue
			}
			del := n
			if err := ns.nl.NeighDel(&del); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete neighbour %s on %s in netns %s: %w", ip, tn.vx, ns.name, err)
			}
		}
	}
	for _, ip := range sortedAddrs(neighs) {
		fam := netlink.FAMILY_V4
		if ip.Is6() {
			fam = netlink.FAMILY_V6
		}
		// Equivalent to: ip -n <tenant> neigh replace <next hop> lladdr <rmac> dev vni<N> nud permanent
		n := &netlink.Neigh{LinkIndex: idx, Family: fam, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: neighs[ip]}
		if err := ns.nl.NeighSet(n); err != nil {
			return fmt.Errorf("add neighbour %s on %s in netns %s: %w", ip, tn.vx, ns.name, err)
		}
	}
	filter := &netlink.Route{LinkIndex: idx, Protocol: unix.RTPROT_STATIC, Table: unix.RT_TABLE_MAIN}
	list, err := ns.nl.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes on %s in netns %s: %w", tn.vx, ns.name, err)
	}
	for _, rt := range list {
		if rt.Dst == nil {
			continue
		}
		dst, ok := prefixOf(rt.Dst)
		if w, wanted := routes[dst]; ok && wanted && net.IP(w.Gw).Equal(rt.Gw) {
			delete(routes, dst)
			continue
		}
		del := rt
		if err := ns.nl.RouteDel(&del); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("delete route %s in netns %s: %w", rt.Dst, ns.name, err)
		}
	}
	dsts := make([]netip.Prefix, 0, len(routes))
	for d := range routes {
		dsts = append(dsts, d)
	}
	sort.Slice(dsts, func(i, j int) bool { return dsts[i].String() < dsts[j].String() })
	for _, d := range dsts {
		rt := routes[d]
		// Equivalent to: ip -n <tenant> route replace <rail prefix> via <next hop> dev vni<N> [onlink] proto static
		if err := ns.nl.RouteReplace(&rt); err != nil {
			return fmt.Errorf("add route %s via %s in netns %s: %w", d, net.IP(rt.Gw), ns.name, err)
		}
	}
	return nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedAddrs[V any](m map[netip.Addr]V) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}
