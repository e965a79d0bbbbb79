package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// RailInfo describes rail Rail of host Host.
type RailInfo struct {
	Host, Rail int
	Node       string
	// Netdev is the host end's name (the fixture tree's netdev of rail
	// Rail), in HostNS.
	Netdev string
	HostNS string
	// Leaf is the leaf the host attaches to; LeafPort the leaf end's name,
	// now in LeafNS (the tenant's namespace, or the leaf's parking
	// namespace when the rail has no tenant).
	Leaf     int
	LeafPort string
	LeafNS   string
	// LeafName is the leaf's LLDP system name (the plan's cabling).
	LeafName string
	// CabledPort is the leaf port the host end reaches now: LeafPort, but
	// after SwapRails another rail's.
	CabledPort string
	// Tenant is the rail's tenant ID in the current plan ("" for none).
	Tenant string
	// Host and leaf addresses with their prefix length (/31, /127).
	HostIPv4, HostIPv6, LeafIPv4, LeafIPv6 netip.Prefix
}

// Prefix is the lab's name prefix.
func (f *Fabric) Prefix() string { return f.prefix }

// WorkDir is the lab's work dir.
func (f *Fabric) WorkDir() string { return f.workDir }

// Plan is the plan the leaves follow now (Up's, then the last Sync's).
func (f *Fabric) Plan() v1.FabricPlan {
	f.mu.Lock()
	defer f.mu.Unlock()
	return clonePlan(f.plan)
}

// Hosts is the number of hosts.
func (f *Fabric) Hosts() int { return len(f.hosts) }

// Rails is the number of rails of each host.
func (f *Fabric) Rails() int { return f.plan.Rails }

// Leaves is the number of leaves.
func (f *Fabric) Leaves() int { return len(f.leaves) }

// Node is host i's node name.
func (f *Fabric) Node(host int) string { return f.hosts[host].node.Name }

// HostOf is the host of a node name.
func (f *Fabric) HostOf(node string) (int, bool) {
	for i, h := range f.hosts {
		if h.node.Name == node {
			return i, true
		}
	}
	return 0, false
}

// HostNS is host i's namespace name.
func (f *Fabric) HostNS(host int) string { return hostNSName(f.prefix, host) }

// Netdevs are host i's rail netdev names, rail order.
func (f *Fabric) Netdevs(host int) []string { return append([]string(nil), f.hosts[host].netdevs...) }

// SysfsRoot is host i's fixture sysfs tree (the agent's sysfs_root).
func (f *Fabric) SysfsRoot(host int) string { return f.hosts[host].sysfs }

// LeafOf is the leaf host i attaches to.
func (f *Fabric) LeafOf(host int) int { return f.hosts[host].leaf }

// LeafNS is leaf l's underlay namespace name (the VTEP's).
func (f *Fabric) LeafNS(l int) string { return leafNSName(f.prefix, l) }

// ParkingNS is leaf l's namespace for ports of rails without a tenant.
func (f *Fabric) ParkingNS(l int) string { return parkNSName(f.prefix, l) }

// TenantNS is the namespace of a tenant on leaf l, "" when the leaf has
// none of its rails.
func (f *Fabric) TenantNS(l int, tenant string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if tn := f.leaves[l].tenants[tenant]; tn != nil {
		return tn.ns.name
	}
	return ""
}

// VXLANDevice is the name of a tenant's VXLAN device (in its namespaces).
func (f *Fabric) VXLANDevice(vni int) string { return vxlanName(vni) }

// SpineNS is the spine's namespace name.
func (f *Fabric) SpineNS() string { return spineNSName(f.prefix) }

// SpineLink is the name of the leaf underlay's link to the spine (in
// LeafNS); the spine's end is "l<leaf>".
func (f *Fabric) SpineLink() string { return spineLink }

// VTEP is leaf l's VTEP address.
func (f *Fabric) VTEP(l int) netip.Addr { return vtepAddr(l) }

// MgmtNS is the management namespace's name: the controller runs there.
func (f *Fabric) MgmtNS() string { return mgmtNSName(f.prefix) }

// MgmtSubnet is the management network.
func (f *Fabric) MgmtSubnet() netip.Prefix { return f.mgmt }

// MgmtAddr is host i's address on mgmt0.
func (f *Fabric) MgmtAddr(host int) netip.Addr { return mgmtAddrOf(f.mgmt, host) }

// ControllerAddr is the controller's management address.
func (f *Fabric) ControllerAddr() netip.Addr { return controllerAddrOf(f.mgmt) }

// ExposeLink is the link Expose added to the caller's namespace and its
// address; "" without Expose.
func (f *Fabric) ExposeLink() (string, netip.Addr) {
	if !f.expose {
		return "", netip.Addr{}
	}
	return exposeLinkName(f.prefix), exposeAddrOf(f.mgmt)
}

// Rail describes rail r of host i.
func (f *Fabric) Rail(host, rail int) RailInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.hosts[host]
	a := h.addrs[rail]
	info := RailInfo{
		Host: host, Rail: rail, Node: h.node.Name, Netdev: h.netdevs[rail], HostNS: hostNSName(f.prefix, host),
		Leaf: h.leaf, LeafPort: h.ports[rail], LeafName: leafSysName(h.leaf), CabledPort: h.ports[h.cable[rail]],
		Tenant:   f.placement(f.plan)[host][rail],
		HostIPv4: a.hostV4, HostIPv6: a.hostV6, LeafIPv4: a.leafV4, LeafIPv6: a.leafV6,
	}
	if h.at[rail] != nil {
		info.LeafNS = h.at[rail].name
	}
	return info
}

// Namespaces lists the namespaces the lab has made, in creation order.
func (f *Fabric) Namespaces() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.made))
	for _, ns := range f.made {
		out = append(out, ns.name)
	}
	return out
}

// Ping sends one echo request from rail r of host i (its host address of
// dst's family as the source, so the rail's policy routing applies) and
// waits at most a second for the reply.
// Equivalent to: ip netns exec <host> ping -c 1 -W 1 -I <rail address> <dst>
func (f *Fabric) Ping(host, rail int, dst netip.Addr) error {
	info := f.Rail(host, rail)
	dst = dst.Unmap()
	src := info.HostIPv4.Addr()
	if dst.Is6() {
		src = info.HostIPv6.Addr()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", info.HostNS,
		"ping", "-n", "-q", "-c", "1", "-W", "1", "-I", src.String(), dst.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from %s (%s rail %d): %w: %s", dst, src, info.Node, rail, err, strings.TrimSpace(lastLines(string(out), 2)))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// DialContext connects from the management namespace (to the controller
// or an agent's endpoint), for an http.Transport.
func (f *Fabric) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	f.mu.Lock()
	mg := f.mg
	f.mu.Unlock()
	if mg == nil || !mg.h.IsOpen() {
		return nil, errors.New("dial: the lab has no management namespace")
	}
	var c net.Conn
	err := inNamespace(mg.h, func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// HostDialer connects from host i's namespace with the local address
// local (a rail address: the rail's policy routing applies, as to the
// agent's own probe requests), for an http.Transport. An invalid local
// leaves the source to the kernel.
func (f *Fabric) HostDialer(host int, local netip.Addr) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		f.mu.Lock()
		ns := f.hosts[host].ns
		f.mu.Unlock()
		if ns == nil || !ns.h.IsOpen() {
			return nil, fmt.Errorf("dial: host %d has no namespace", host)
		}
		d := &net.Dialer{}
		if local.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
		}
		var c net.Conn
		err := inNamespace(ns.h, func() error {
			var err error
			c, err = d.DialContext(ctx, network, address)
			return err
		})
		return c, err
	}
}

// ConfigureHostRails does by hand, for tests that run no agent, what the
// agent does on host i's rails: MTU, up, the host addresses, and per-rail
// policy routing (a rule from each rail address to table 100+rail, which
// routes the rail's pools via the leaf). Table and rule 100+rail sit
// outside the agent's default range.
func (f *Fabric) ConfigureHostRails(host int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.hosts[host]
	v4 := v1.ParsePools(f.plan.Addressing.IPv4Pools, false)
	v6 := v1.ParsePools(f.plan.Addressing.IPv6Pools, true)
	for r, dev := range h.netdevs {
		link, err := h.ns.nl.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("find %s in netns %s: %w", dev, h.ns.name, err)
		}
		if err := h.ns.nl.LinkSetMTU(link, f.mtu); err != nil {
			return fmt.Errorf("set mtu of %s: %w", dev, err)
		}
		a := h.addrs[r]
		for _, p := range []netip.Prefix{a.hostV4, a.hostV6} {
			if err := f.addAddr(h.ns, dev, p); err != nil {
				return err
			}
		}
		if err := h.ns.nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", dev, err)
		}
		table := 100 + r
		for _, x := range []struct {
			src, pool, gw netip.Prefix
		}{{a.hostV4, v4[r], a.leafV4}, {a.hostV6, v6[r], a.leafV6}} {
			rule := netlink.NewRule()
			rule.Priority, rule.Table = table, table
			rule.Src = ipnet(hostPrefix(x.src.Addr()))
			rule.Family = netlink.FAMILY_V4
			if x.src.Addr().Is6() {
				rule.Family = netlink.FAMILY_V6
			}
			if err := h.ns.nl.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("add rule from %s: %w", x.src.Addr(), err)
			}
			rt := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipnet(x.pool), Gw: x.gw.Addr().AsSlice(), Table: table}
			if err := h.ns.nl.RouteReplace(rt); err != nil {
				return fmt.Errorf("add route %s via %s table %d: %w", x.pool, x.gw.Addr(), table, err)
			}
		}
	}
	return f.waitRailsUp(h, 5*time.Second)
}

// WaitRailsUp waits until every rail of host i is operationally up at
// both ends. The kernel's link watch marks a veth up within a second of
// carrier (immediately only when the two ends' interface indexes differ),
// and until then IPv6 on the link is not ready: a neighbour solicitation
// for a rail address goes unanswered and the first IPv6 packet waits a
// second for the retransmission.
func (f *Fabric) WaitRailsUp(host int, timeout time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waitRailsUp(f.hosts[host], timeout)
}

func (f *Fabric) waitRailsUp(h *host, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for r, dev := range h.netdevs {
		if err := waitOperUp(h.ns, dev, deadline, timeout); err != nil {
			return err
		}
		if err := waitOperUp(h.at[r], h.ports[r], deadline, timeout); err != nil {
			return err
		}
	}
	return nil
}

// waitPortsUp waits for the leaf ports of rails whose host end is up.
func (f *Fabric) waitPortsUp(h *host, rails []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, r := range rails {
		link, err := h.ns.nl.LinkByName(h.netdevs[r])
		if err != nil {
			return fmt.Errorf("find %s in netns %s: %w", h.netdevs[r], h.ns.name, err)
		}
		if link.Attrs().Flags&net.FlagUp == 0 {
			continue
		}
		if err := waitOperUp(h.ns, h.netdevs[r], deadline, timeout); err != nil {
			return err
		}
		if err := waitOperUp(h.at[r], h.ports[r], deadline, timeout); err != nil {
			return err
		}
	}
	return nil
}

// waitOperUp waits until a link is operationally up.
func waitOperUp(ns *namespace, name string, deadline time.Time, timeout time.Duration) error {
	for {
		link, err := ns.nl.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s in netns %s: %w", name, ns.name, err)
		}
		if link.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s in netns %s is %s after %s", name, ns.name, link.Attrs().OperState, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
