package lldp

import (
	"encoding/binary"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The .frame fixtures are LLDPDUs lldpd 1.0.16 sent, captured with
// tcpdump -w on the host end of a veth pair.
func TestDecodeFrameCaptured(t *testing.T) {
	for _, tc := range []struct {
		file string
		want Neighbor
	}{
		{"leaf0-swp1.frame", Neighbor{ChassisID: "8e:99:89:21:b5:38", ChassisIDType: "mac", SysName: "leaf0", PortID: "swp1", PortIDType: "ifname", PortDescr: "gpu-00 rail0", TTL: 4 * time.Second, Source: "frame"}},
		{"leaf1-swp1.frame", Neighbor{ChassisID: "82:1f:9e:b7:d7:78", ChassisIDType: "mac", SysName: "leaf1", PortID: "82:1f:9e:b7:d7:78", PortIDType: "mac", PortDescr: "swp1", TTL: 4 * time.Second, Source: "frame"}},
	} {
		got, err := DecodeFrame(readFixture(t, tc.file))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\ngot  %+v\nwant %+v", tc.file, got, tc.want)
		}
	}
	// lldpctl and the frame say the same about one port.
	ctl, _ := ParseLldpctlJSON(readFixture(t, "lldpctl-several.json"))
	fr, _ := DecodeFrame(readFixture(t, "leaf1-swp1.frame"))
	if c := ctl["rail2"]; c.ChassisID != fr.ChassisID || c.PortID != fr.PortID || c.String() != fr.String() || fr.String() != "leaf1 port swp1" {
		t.Errorf("lldpctl %s (%+v), frame %s (%+v)", c, c, fr, fr)
	}
}

func tlv(typ int, v ...byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(typ<<9|len(v))), v...)
}

func frameOf(tlvs ...[]byte) []byte {
	b := append(append([]byte{}, MulticastAddr...), 2, 0, 0, 0, 0, 1, 0x88, 0xcc)
	for _, t := range tlvs {
		b = append(b, t...)
	}
	return b
}

func TestDecodeFrame(t *testing.T) {
	chassis := tlv(1, 4, 2, 0, 0, 0, 0, 9)
	port := tlv(2, append([]byte{5}, "Ethernet1"...)...)
	ttl := tlv(3, 0, 120)
	ok := []struct {
		name  string
		frame []byte
		check func(Neighbor) bool
	}{
		{"minimal, no end", frameOf(chassis, port, ttl), func(n Neighbor) bool { return n.PortID == "Ethernet1" && n.TTL == 120*time.Second }},
		{"padding after end", append(frameOf(chassis, port, ttl, tlv(0)), 0, 0, 0, 0, 0xff), func(n Neighbor) bool { return n.ChassisID == "02:00:00:00:00:09" }},
		{"ip chassis", frameOf(tlv(1, 5, 1, 10, 0, 0, 1), port, ttl), func(n Neighbor) bool { return n.ChassisID == "10.0.0.1" && n.ChassisIDType == "ip" }},
		{"ipv6 port", frameOf(chassis, tlv(2, 4, 2, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1), ttl), func(n Neighbor) bool { return n.PortID == "fe80::1" }},
		{"binary local id", frameOf(chassis, tlv(2, 7, 0, 1, 0xff), ttl), func(n Neighbor) bool { return n.PortID == "00:01:ff" && n.PortIDType == "local" }},
		{"unknown subtype", frameOf(tlv(1, 9, 'x'), port, ttl), func(n Neighbor) bool { return n.ChassisID == "x" && n.ChassisIDType == "subtype9" }},
		{"short mac is text", frameOf(tlv(1, 4, 'a', 'b'), port, ttl), func(n Neighbor) bool { return n.ChassisID == "ab" }},
		{"shutdown", frameOf(chassis, port, tlv(3, 0, 0), tlv(0)), func(n Neighbor) bool { return n.TTL == 0 }},
		{"vlan tagged", append(append(append([]byte{}, frameOf()[:12]...), 0x81, 0, 0, 5, 0x88, 0xcc), append(append(chassis, port...), ttl...)...), func(n Neighbor) bool { return n.PortID == "Ethernet1" }},
		{"sysname sanitized", frameOf(chassis, port, ttl, tlv(5, 'l', 0x1b, 0xff), tlv(127, 0, 0x12, 0x0f, 1), tlv(0)), func(n Neighbor) bool { return n.SysName == "l??" }},
	}
	for _, tc := range ok {
		n, err := DecodeFrame(tc.frame)
		if err != nil || !tc.check(n) {
			t.Errorf("%s: %+v, %v", tc.name, n, err)
		}
	}
	bad := []struct {
		name, want string
		frame      []byte
	}{
		{"short", "shorter than an Ethernet header", []byte{1, 2, 3}},
		{"short tagged", "tagged", append(frameOf()[:12], 0x81, 0, 0)},
		{"ipv4", "not LLDP", append(frameOf()[:12], 8, 0)},
		{"empty", "before the chassis ID", frameOf()},
		{"order", "want 1", frameOf(port, chassis, ttl)},
		{"no ttl", "want 3", frameOf(chassis, port, tlv(4, 'x'))},
		{"truncated header", "truncated header", append(frameOf(chassis, port, ttl), 2)},
		{"truncated value", "length 9, only 2 bytes left", frameOf(chassis, port, ttl, []byte{5 << 1, 9, 'a', 'b'})},
		{"empty chassis", "chassis ID of length 1", frameOf(tlv(1, 4), port, ttl)},
		{"short ttl", "TTL of length 1", frameOf(chassis, port, tlv(3, 1))},
		{"long end", "end TLV of length 1", frameOf(chassis, port, ttl, tlv(0, 1))},
		{"sysname twice", "type 5 repeated", frameOf(chassis, port, ttl, tlv(5, 'a'), tlv(5, 'b'))},
		{"chassis twice", "type 1 repeated", frameOf(chassis, port, ttl, chassis)},
	}
	for _, tc := range bad {
		_, err := DecodeFrame(tc.frame)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "lldp frame: ") {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestEncodeFrame(t *testing.T) {
	src := net.HardwareAddr{2, 0, 0, 0, 0, 7}
	for _, n := range []Neighbor{
		{ChassisID: "0c:42:a1:00:00:01", SysName: "leaf0", PortID: "swp1", PortDescr: "gpu-00 rail0", TTL: 120 * time.Second},
		{ChassisID: "leaf-chassis", PortID: "aa:bb:cc:dd:ee:ff", TTL: 0},
	} {
		b, err := EncodeFrame(src, n)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeFrame(b)
		if err != nil || got.ChassisID != n.ChassisID || got.PortID != n.PortID || got.SysName != n.SysName || got.PortDescr != n.PortDescr || got.TTL != n.TTL || len(b) < 60 {
			t.Errorf("round trip of %+v: %+v, %v", n, got, err)
		}
	}
	for _, tc := range []struct {
		n    Neighbor
		want string
	}{
		{Neighbor{PortID: "p"}, "chassis ID"},
		{Neighbor{ChassisID: "c"}, "port ID"},
		{Neighbor{ChassisID: "c", PortID: "p", TTL: -time.Second}, "ttl"},
		{Neighbor{ChassisID: "c", PortID: "p", SysName: strings.Repeat("s", 600)}, "more than 511"},
	} {
		if _, err := EncodeFrame(src, tc.n); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.n, err, tc.want)
		}
	}
	if _, err := EncodeFrame(nil, Neighbor{ChassisID: "c", PortID: "p"}); err == nil {
		t.Error("no source accepted")
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, name := range []string{"leaf0-swp1.frame", "leaf1-swp1.frame"} {
		f.Add(readFixture(f, name))
	}
	f.Add(frameOf(tlv(1, 4, 2, 0, 0, 0, 0, 9), tlv(2, 5, 'x'), tlv(3, 0, 1), tlv(0)))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := DecodeFrame(b)
		if err != nil {
			return
		}
		if n.ChassisID == "" || n.PortID == "" || n.Source != "frame" {
			t.Fatalf("decoded without ids: %+v", n)
		}
		for _, s := range []string{n.ChassisID, n.PortID, n.SysName, n.PortDescr} {
			if text(s) != s {
				t.Fatalf("unsafe text %q", s)
			}
		}
	})
}
