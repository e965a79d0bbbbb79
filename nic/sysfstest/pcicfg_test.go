package sysfstest

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// extCaps walks the extended capability chain of cfg: ID at each offset.
func extCaps(t *testing.T, cfg []byte) map[int]uint16 {
	t.Helper()
	out := map[int]uint16{}
	for off := 0x100; off != 0; {
		if _, loop := out[off]; loop || off+4 > len(cfg) {
			t.Fatalf("bad chain at 0x%x", off)
		}
		hdr := binary.LittleEndian.Uint32(cfg[off:])
		out[off] = uint16(hdr)
		off = int(hdr>>20) & 0xffc
	}
	return out
}

func TestConfigSpace(t *testing.T) {
	ctrl := ACSLinuxDefault
	cfg := ConfigSpace(&ctrl)
	if len(cfg) != 4096 || cfg[0x0e] != 1 || cfg[0x0b] != 0x06 {
		t.Fatalf("not a 4096-byte bridge config space")
	}
	caps := extCaps(t, cfg)
	if caps[ConfigAEROffset] != 0x0001 || caps[ConfigACSOffset] != 0x000d || len(caps) != 3 {
		t.Errorf("chain with ACS: %v", caps)
	}
	if got := binary.LittleEndian.Uint16(cfg[ConfigACSOffset+6:]); got != 0x001d {
		t.Errorf("ACS control 0x%04x, want 0x001d", got)
	}
	caps = extCaps(t, ConfigSpace(nil))
	for off, id := range caps {
		if id == 0x000d {
			t.Errorf("ACS at 0x%x in a config space without it", off)
		}
	}
	if len(caps) != 2 {
		t.Errorf("chain without ACS: %v", caps)
	}
}

func TestPCIConfig(t *testing.T) {
	tr := New(t.TempDir())
	tr.HostBridge("0000:17", 0).Bridge("0000:17:01.0", 0x8086, 0x347a)
	tr.PCIConfig("0000:17:01.0", ConfigSpace(nil))
	if err := tr.Err(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(tr.Root(), "devices/pci0000:17/0000:17:01.0/config"))
	if err != nil || len(b) != 4096 {
		t.Fatalf("config: %d bytes, %v", len(b), err)
	}
	tr.PCIConfig("0000:99:00.0", ConfigSpace(nil))
	if tr.Err() == nil {
		t.Error("config of a device not in the tree: no error")
	}
}
