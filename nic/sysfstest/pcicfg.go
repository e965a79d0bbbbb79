package sysfstest

import (
	"encoding/binary"
	"fmt"
	"path"
	"path/filepath"
)

// PCI configuration space for fixtures. The builders in tree.go write no
// config files (the committed trees have none); a test that needs one,
// for the ACS check say, adds it with PCIConfig.

// ACS Control register bits (PCIe Base Specification, ACS Extended
// Capability, offset 06h).
const (
	ACSSrcValid    uint16 = 1 << 0 // SV: source validation
	ACSTransBlk    uint16 = 1 << 1 // TB: translation blocking
	ACSReqRedir    uint16 = 1 << 2 // RR: P2P request redirect
	ACSCmpltRedir  uint16 = 1 << 3 // CR: P2P completion redirect
	ACSUpstreamFwd uint16 = 1 << 4 // UF: upstream forwarding
	ACSEgressCtrl  uint16 = 1 << 5 // EC: P2P egress control
	ACSDirectTrans uint16 = 1 << 6 // DT: direct translated P2P

	// ACSLinuxDefault is what Linux's pci_std_enable_acs sets on a
	// downstream port when an IOMMU is on: SV, RR, CR and UF.
	ACSLinuxDefault = ACSSrcValid | ACSReqRedir | ACSCmpltRedir | ACSUpstreamFwd
)

// Offsets of the extended capabilities ConfigSpace lays out.
const (
	ConfigAEROffset = 0x100
	ConfigACSOffset = 0x148
)

// ConfigSpace returns the 4096-byte configuration space of a PCIe switch
// downstream port (a Broadcom PEX bridge, 1000:c030): a type 1 header, a
// PCI Express capability at 0x40, and an extended capability chain from
// 0x100 of AER, ACS (at 0x148, only when acsCtrl is not nil, with its
// Control register set to *acsCtrl and every control supported) and
// Secondary PCI Express, the last one ending the chain. As root reads it;
// a non-root reader of sysfs gets the first 64 bytes.
func ConfigSpace(acsCtrl *uint16) []byte {
	b := make([]byte, 4096)
	le := binary.LittleEndian
	le.PutUint16(b[0x00:], 0x1000) // vendor
	le.PutUint16(b[0x02:], 0xc030) // device
	le.PutUint16(b[0x04:], 0x0407) // command: I/O, memory, bus master, INTx off
	le.PutUint16(b[0x06:], 0x0010) // status: capabilities list
	b[0x08] = 0xb0                 // revision
	b[0x0a], b[0x0b] = 0x04, 0x06  // class 0604: PCI-to-PCI bridge
	b[0x0e] = 0x01                 // header type 1
	b[0x34] = 0x40                 // capabilities pointer
	b[0x40], b[0x41] = 0x10, 0x00  // PCI Express capability, last
	le.PutUint16(b[0x42:], 0x0062) // version 2, downstream port
	putExtCap(b, ConfigAEROffset, 0x0001, 2, ConfigACSOffset)
	next := ConfigACSOffset // Secondary PCI Express takes ACS's place
	if acsCtrl != nil {
		next = 0x158
		putExtCap(b, ConfigACSOffset, 0x000d, 1, 0x158)
		le.PutUint16(b[ConfigACSOffset+4:], 0x007f) // every ACS control supported
		le.PutUint16(b[ConfigACSOffset+6:], *acsCtrl)
	}
	putExtCap(b, next, 0x0019, 1, 0) // Secondary PCI Express, last
	return b
}

// putExtCap writes an extended capability header: ID, version, next.
func putExtCap(b []byte, off int, id uint16, version, next int) {
	binary.LittleEndian.PutUint32(b[off:], uint32(id)|uint32(version&0xf)<<16|uint32(next&0xfff)<<20)
}

// PCIConfig writes the config file of PCI function addr, which must be in
// the tree.
func (t *Tree) PCIConfig(addr string, cfg []byte) {
	if t.err != nil {
		return
	}
	p := path.Join("/bus/pci/devices", addr)
	if _, err := filepath.EvalSymlinks(t.host(p)); err != nil {
		t.err = fmt.Errorf("pci config of %s: %w", addr, err)
		return
	}
	t.WriteRaw(p+"/config", cfg)
}
