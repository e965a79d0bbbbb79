package nic

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Parsers for the sysfs attribute formats the kernel prints. Each takes the
// attribute's contents with surrounding white space already trimmed and
// returns an error naming what is wrong; none of them panics on any input
// (they are fuzzed).

var errEmpty = errors.New("empty value")

// ParsePortState parses ports/<n>/state and ports/<n>/phys_state, printed by
// the kernel as "%d: %s" ("4: ACTIVE", "5: LinkUp"). It returns the number
// and the name.
func ParsePortState(s string) (int, string, error) {
	num, name, ok := strings.Cut(s, ":")
	if !ok {
		return 0, "", fmt.Errorf("want \"<number>: <name>\", got %q", s)
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n < 0 {
		return 0, "", fmt.Errorf("bad state number %q", num)
	}
	name = strings.TrimSpace(name)
	if name == "" {
		return 0, "", fmt.Errorf("missing state name in %q", s)
	}
	return n, name, nil
}

// ParseRate parses ports/<n>/rate, printed as "%d%s Gb/sec (%dX%s)"
// ("400 Gb/sec (4X NDR)", "2.5 Gb/sec (1X SDR)"), and returns Gb/s.
func ParseRate(s string) (float64, error) {
	num, rest, ok := strings.Cut(s, " ")
	if !ok || !strings.HasPrefix(rest, "Gb/sec") {
		return 0, fmt.Errorf("want \"<n> Gb/sec (<width>X<speed>)\", got %q", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || v != v || v > 1e6 {
		return 0, fmt.Errorf("bad rate %q", num)
	}
	return v, nil
}

// ParseGID parses ports/<n>/gids/<i>, printed with %pI6 as eight groups of
// four hex digits ("fe80:0000:0000:0000:ba3f:d2ff:fe34:bc5e").
func ParseGID(s string) (net.IP, error) {
	groups := strings.Split(s, ":")
	if len(groups) != 8 {
		return nil, fmt.Errorf("want 8 groups of 4 hex digits, got %q", s)
	}
	ip := make(net.IP, net.IPv6len)
	for i, g := range groups {
		if len(g) != 4 {
			return nil, fmt.Errorf("want 8 groups of 4 hex digits, got %q", s)
		}
		v, err := strconv.ParseUint(g, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("bad hex group %q in %q", g, s)
		}
		ip[2*i] = byte(v >> 8)
		ip[2*i+1] = byte(v)
	}
	return ip, nil
}

// ParseGUID validates node_guid and sys_image_guid, printed as four groups of
// four hex digits ("b83f:d203:0034:bc5e"), and returns it lower-cased.
func ParseGUID(s string) (string, error) {
	groups := strings.Split(s, ":")
	if len(groups) != 4 {
		return "", fmt.Errorf("want 4 groups of 4 hex digits, got %q", s)
	}
	for _, g := range groups {
		if len(g) != 4 {
			return "", fmt.Errorf("want 4 groups of 4 hex digits, got %q", s)
		}
		if _, err := strconv.ParseUint(g, 16, 16); err != nil {
			return "", fmt.Errorf("bad hex group %q in %q", g, s)
		}
	}
	return strings.ToLower(s), nil
}

// ParseLinkSpeed parses current_link_speed and max_link_speed of a PCI
// device ("16.0 GT/s PCIe", older kernels "8 GT/s" or "2.5 GT/s") and
// returns GT/s. "Unknown" (no link trained) returns 0 and no error.
func ParseLinkSpeed(s string) (float64, error) {
	if s == "Unknown" {
		return 0, nil
	}
	num, rest, ok := strings.Cut(s, " ")
	if !ok || !strings.HasPrefix(rest, "GT/s") {
		return 0, fmt.Errorf("want \"<n> GT/s\", got %q", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 || v != v || v > 1e6 {
		return 0, fmt.Errorf("bad link speed %q", num)
	}
	return v, nil
}

// ParseLinkWidth parses current_link_width and max_link_width ("16").
func ParseLinkWidth(s string) (int, error) {
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 || v > 64 {
		return 0, fmt.Errorf("bad link width %q", s)
	}
	return v, nil
}

// ParseNUMANode parses numa_node ("0", "1", "-1" when unknown).
func ParseNUMANode(s string) (int, error) {
	v, err := strconv.Atoi(s)
	if err != nil || v < -1 || v > 4095 {
		return -1, fmt.Errorf("bad numa node %q", s)
	}
	return v, nil
}

// ParseHex parses vendor, device and class ("0x15b3", "0x020000").
func ParseHex(s string) (uint32, error) {
	digits, ok := strings.CutPrefix(s, "0x")
	if !ok || digits == "" {
		return 0, fmt.Errorf("want 0x-prefixed hex, got %q", s)
	}
	v, err := strconv.ParseUint(digits, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("bad hex %q", s)
	}
	return uint32(v), nil
}

// ParseMTU parses a netdev's mtu attribute.
func ParseMTU(s string) (int, error) {
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 || v > 1<<20 {
		return 0, fmt.Errorf("bad mtu %q", s)
	}
	return v, nil
}

// ParseMAC validates a netdev's address attribute ("b8:3f:d2:34:bc:5e";
// InfiniBand netdevs have 20-byte addresses).
func ParseMAC(s string) (string, error) {
	if s == "" {
		return "", errEmpty
	}
	hw, err := net.ParseMAC(s)
	if err != nil {
		return "", fmt.Errorf("bad hardware address %q", s)
	}
	return hw.String(), nil
}
