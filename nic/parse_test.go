package nic

import (
	"net"
	"testing"
)

func TestParsePortState(t *testing.T) {
	for _, tc := range []struct {
		in     string
		num    int
		name   string
		hasErr bool
	}{
		{"4: ACTIVE", 4, "ACTIVE", false},
		{"1: DOWN", 1, "DOWN", false},
		{"5: LinkUp", 5, "LinkUp", false},
		{"4: PortConfigurationTraining", 4, "PortConfigurationTraining", false},
		{"ACTIVE", 0, "", true},
		{"x: ACTIVE", 0, "", true},
		{"4:", 0, "", true},
		{"-1: DOWN", 0, "", true},
	} {
		num, name, err := ParsePortState(tc.in)
		if (err != nil) != tc.hasErr || num != tc.num || name != tc.name {
			t.Errorf("ParsePortState(%q) = %d, %q, %v; want %d, %q, error %v", tc.in, num, name, err, tc.num, tc.name, tc.hasErr)
		}
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in     string
		want   float64
		hasErr bool
	}{
		{"400 Gb/sec (4X NDR)", 400, false},
		{"2.5 Gb/sec (1X SDR)", 2.5, false},
		{"10 Gb/sec (1X FDR10)", 10, false}, // rxe, from the capture
		{"100 Gb/sec (4X EDR)", 100, false},
		{"400 Mb/sec", 0, true},
		{"fast", 0, true},
		{"NaN Gb/sec (4X NDR)", 0, true},
	} {
		got, err := ParseRate(tc.in)
		if (err != nil) != tc.hasErr || got != tc.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.hasErr)
		}
	}
}

func TestParseGID(t *testing.T) {
	ip, err := ParseGID("0000:0000:0000:0000:0000:ffff:0a00:0001")
	if err != nil || !ip.Equal(net.ParseIP("10.0.0.1")) {
		t.Errorf("IPv4-mapped GID = %v, %v", ip, err)
	}
	ip, err = ParseGID("fe80:0000:0000:0000:2cd6:ffff:fef2:7858")
	if err != nil || !ip.Equal(net.ParseIP("fe80::2cd6:ffff:fef2:7858")) {
		t.Errorf("link-local GID = %v, %v", ip, err)
	}
	if got := formatGID(ip); got != "fe80:0000:0000:0000:2cd6:ffff:fef2:7858" {
		t.Errorf("formatGID = %s", got)
	}
	for _, bad := range []string{"fe80::1", "fe80:0:0:0:0:0:0:1", "zzzz:0000:0000:0000:0000:0000:0000:0000", ""} {
		if _, err := ParseGID(bad); err == nil {
			t.Errorf("ParseGID(%q): want error", bad)
		}
	}
}

func TestParseSmallAttributes(t *testing.T) {
	if v, err := ParseLinkSpeed("32.0 GT/s PCIe"); err != nil || v != 32 {
		t.Errorf("ParseLinkSpeed gen5 = %v, %v", v, err)
	}
	if v, err := ParseLinkSpeed("8 GT/s"); err != nil || v != 8 {
		t.Errorf("ParseLinkSpeed old format = %v, %v", v, err)
	}
	if v, err := ParseLinkSpeed("Unknown"); err != nil || v != 0 {
		t.Errorf("ParseLinkSpeed(Unknown) = %v, %v", v, err)
	}
	if _, err := ParseLinkSpeed("fast"); err == nil {
		t.Error("ParseLinkSpeed(fast): want error")
	}
	if v, err := ParseNUMANode("-1"); err != nil || v != -1 {
		t.Errorf("ParseNUMANode(-1) = %v, %v", v, err)
	}
	if _, err := ParseNUMANode("zero"); err == nil {
		t.Error("ParseNUMANode(zero): want error")
	}
	if v, err := ParseHex("0x15b3"); err != nil || v != VendorMellanox {
		t.Errorf("ParseHex = %x, %v", v, err)
	}
	if _, err := ParseHex("15b3"); err == nil {
		t.Error("ParseHex without 0x: want error")
	}
	if g, err := ParseGUID("B83F:D203:0034:BC5E"); err != nil || g != "b83f:d203:0034:bc5e" {
		t.Errorf("ParseGUID = %q, %v", g, err)
	}
	if _, err := ParseGUID("b83f:d203:0034"); err == nil {
		t.Error("ParseGUID short: want error")
	}
	if m, err := ParseMAC("B8:3F:D2:34:BC:5E"); err != nil || m != "b8:3f:d2:34:bc:5e" {
		t.Errorf("ParseMAC = %q, %v", m, err)
	}
	if _, err := ParseMTU("9000x"); err == nil {
		t.Error("ParseMTU garbage: want error")
	}
	if w, err := ParseLinkWidth("16"); err != nil || w != 16 {
		t.Errorf("ParseLinkWidth = %v, %v", w, err)
	}
}

// The fuzz targets feed arbitrary attribute contents to each parser. A
// parser must never panic, and what it accepts must be self-consistent.

func FuzzParsePortState(f *testing.F) {
	for _, s := range []string{"4: ACTIVE", "1: DOWN", "5: LinkUp", "3: Disabled", "0: NOP", ":", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, name, err := ParsePortState(s)
		if err == nil && (n < 0 || name == "") {
			t.Fatalf("ParsePortState(%q) accepted %d %q", s, n, name)
		}
	})
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"400 Gb/sec (4X NDR)", "2.5 Gb/sec (1X SDR)", "10 Gb/sec (1X FDR10)", "1e400 Gb/sec", "-1 Gb/sec"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseRate(s)
		if err == nil && (v < 0 || v != v) {
			t.Fatalf("ParseRate(%q) accepted %v", s, v)
		}
	})
}

func FuzzParseGID(f *testing.F) {
	for _, s := range []string{"fe80:0000:0000:0000:2cd6:ffff:fef2:7858", "0000:0000:0000:0000:0000:ffff:0a00:0001", "0000:0000:0000:0000:0000:0000:0000:0000", "::1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ip, err := ParseGID(s)
		if err != nil {
			return
		}
		back := formatGID(ip)
		again, err := ParseGID(back)
		if err != nil || !again.Equal(ip) {
			t.Fatalf("GID %q did not round-trip: %q", s, back)
		}
	})
}

func FuzzParseGUID(f *testing.F) {
	for _, s := range []string{"2cd6:ffff:fef2:7858", "b83f:d203:0034:bc5e", "1:2:3:4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := ParseGUID(s)
		if err == nil && len(g) != 19 {
			t.Fatalf("ParseGUID(%q) accepted %q", s, g)
		}
	})
}

func FuzzParseLinkSpeed(f *testing.F) {
	for _, s := range []string{"32.0 GT/s PCIe", "2.5 GT/s PCIe", "8 GT/s", "Unknown", "0 GT/s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseLinkSpeed(s)
		if err == nil && (v < 0 || v != v) {
			t.Fatalf("ParseLinkSpeed(%q) accepted %v", s, v)
		}
	})
}

func FuzzParseNumbers(f *testing.F) {
	for _, s := range []string{"0x15b3", "0x030200", "-1", "16", "9000", "b8:3f:d2:34:bc:5e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if v, err := ParseNUMANode(s); err == nil && v < -1 {
			t.Fatalf("ParseNUMANode(%q) accepted %d", s, v)
		}
		if v, err := ParseLinkWidth(s); err == nil && v < 0 {
			t.Fatalf("ParseLinkWidth(%q) accepted %d", s, v)
		}
		if v, err := ParseMTU(s); err == nil && v < 0 {
			t.Fatalf("ParseMTU(%q) accepted %d", s, v)
		}
		_, _ = ParseHex(s)
		_, _ = ParseMAC(s)
	})
}
