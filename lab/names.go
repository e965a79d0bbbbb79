package lab

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Defaults of Options.
const (
	DefaultPrefix = "rl-"
	DefaultHosts  = 4
	DefaultLeaves = 2
)

// DefaultMgmtSubnet is the management network's default subnet.
var DefaultMgmtSubnet = netip.MustParsePrefix("192.168.77.0/24")

// Fixed parts of the topology.
const (
	// MaxLeaves bounds the leaves (underlay addresses 10.254.<leaf+1>.0/31).
	MaxLeaves = 250
	// underlayExtraMTU is what the underlay adds to the rail MTU: at least
	// the 50 bytes of VXLAN over IPv4.
	underlayExtraMTU = 100
	// vxlanPort is the VXLAN UDP port (IANA).
	vxlanPort = 4789
	// mgmtBridge is the management bridge in the mgmt namespace.
	mgmtBridge = "br0"
	// MgmtNetdev is each host's management interface.
	MgmtNetdev = "mgmt0"
	// spineLink is each leaf underlay's link to the spine.
	spineLink = "spine"
	// markerFile marks a work dir as a lab's.
	markerFile = ".roce-lab"
)

var prefixRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,11}$`)

// checkPrefix accepts 1-12 characters of a-z, 0-9, '-' and '_', the
// first a letter or digit: the prefix also names the --expose link
// (<prefix>mg, at most 15 bytes).
func checkPrefix(p string) error {
	if !prefixRE.MatchString(p) {
		return fmt.Errorf("prefix %q: want 1-12 characters of a-z, 0-9, '-', '_', starting with a letter or digit", p)
	}
	return nil
}

// labNSRE matches the namespace names of the lab with a prefix.
func labNSRE(prefix string) *regexp.Regexp {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `(h[0-9]+|l[0-9]+|l[0-9]+p|l[0-9]+t[0-9]+|sp|mg)$`)
}

func hostNSName(prefix string, i int) string      { return fmt.Sprintf("%sh%d", prefix, i) }
func leafNSName(prefix string, l int) string      { return fmt.Sprintf("%sl%d", prefix, l) }
func parkNSName(prefix string, l int) string      { return fmt.Sprintf("%sl%dp", prefix, l) }
func tenantNSName(prefix string, l, k int) string { return fmt.Sprintf("%sl%dt%d", prefix, l, k) }
func spineNSName(prefix string) string            { return prefix + "sp" }
func mgmtNSName(prefix string) string             { return prefix + "mg" }
func exposeLinkName(prefix string) string         { return prefix + "mg" }
func leafPortName(host, rail int) string          { return fmt.Sprintf("h%dr%d", host, rail) }
func vxlanName(vni int) string                    { return fmt.Sprintf("vni%d", vni) }
func spinePortName(l int) string                  { return fmt.Sprintf("l%d", l) }
func mgmtPortName(host int) string                { return fmt.Sprintf("h%d", host) }
func railMAC(host, rail int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x1a, byte(host >> 8), byte(host), byte(rail), 0x01}
}
func mgmtMAC(host int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x1b, byte(host >> 8), byte(host), 0x00, 0x01}
}
func vtepAddr(l int) netip.Addr { return netip.AddrFrom4([4]byte{10, 254, 0, byte(l + 1)}) }
func spineLoopback() netip.Addr { return netip.AddrFrom4([4]byte{10, 254, 0, 254}) }
func spineLinkAddr(l int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 254, byte(l + 1), 0}), 31)
}
func leafLinkAddr(l int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 254, byte(l + 1), 1}), 31)
}
func hostPrefix(a netip.Addr) netip.Prefix           { return netip.PrefixFrom(a, a.BitLen()) }
func exposeAddrOf(p netip.Prefix) netip.Addr         { return lastHost(p) }
func controllerAddrOf(p netip.Prefix) netip.Addr     { return p.Masked().Addr().Next() }
func mgmtAddrOf(p netip.Prefix, host int) netip.Addr { return offset(p.Masked().Addr(), 10+host) }

// routerMAC is the router MAC of a tenant's VXLAN device on a leaf (the
// RMAC of EVPN Type-5 routes): 02:ee:<leaf>:<vni, 3 bytes>.
func routerMAC(l, vni int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0xee, byte(l), byte(vni >> 16), byte(vni >> 8), byte(vni)}
}

// linkLocal is the EUI-64 IPv6 link-local address of a MAC: the address
// the kernel gives a device with that MAC, used as the IPv6 next hop of a
// remote leaf on a VNI.
func linkLocal(mac net.HardwareAddr) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfe, 0x80, 8: mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
}

func offset(a netip.Addr, n int) netip.Addr {
	for ; n > 0; n-- {
		a = a.Next()
	}
	return a
}

// lastHost is the highest address of an IPv4 subnet below its broadcast
// address.
func lastHost(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= 1<<(32-p.Bits()) - 1
	v--
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// DefaultWorkDir is the work dir of a lab with a prefix when Options
// leave it empty: $TMPDIR/roce-lab-<prefix without trailing '-' or '_'>.
func DefaultWorkDir(prefix string) string {
	return filepath.Join(os.TempDir(), "roce-lab-"+strings.TrimRight(prefix, "-_"))
}
