package lldp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// EtherType is LLDP's ethertype.
const EtherType = 0x88cc

// MulticastAddr is the nearest-bridge group address LLDP agents send to
// (01:80:c2:00:00:0e).
var MulticastAddr = net.HardwareAddr{0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e}

// TLV types.
const (
	tlvEnd       = 0
	tlvChassisID = 1
	tlvPortID    = 2
	tlvTTL       = 3
	tlvPortDescr = 4
	tlvSysName   = 5
)

// Subtype names, lldpctl's words.
var (
	chassisSubtypes = map[byte]string{1: "chassis", 2: "ifalias", 3: "port", 4: "mac", 5: "ip", 6: "ifname", 7: "local"}
	portSubtypes    = map[byte]string{1: "ifalias", 2: "port", 3: "mac", 4: "ip", 5: "ifname", 6: "circuit", 7: "local"}
	macSubtype      = map[bool]byte{true: 4, false: 3} // chassis, port
	addrSubtype     = map[bool]byte{true: 5, false: 4} // chassis, port
	idNames         = map[bool]map[byte]string{true: chassisSubtypes, false: portSubtypes}
	fieldNames      = map[bool]string{true: "chassis ID", false: "port ID"}
)

// DecodeFrame decodes an Ethernet frame carrying an LLDPDU (ethertype
// 0x88cc, one 802.1Q tag allowed): the chassis ID, port ID and TTL TLVs
// first and in that order, each once; port description and system name
// at most once; every TLV inside the frame; nothing read past an End
// TLV (Ethernet padding). Source is "frame"; Seen is left zero.
func DecodeFrame(frame []byte) (Neighbor, error) {
	var n Neighbor
	if len(frame) < 14 {
		return n, fmt.Errorf("lldp frame: %d bytes, shorter than an Ethernet header", len(frame))
	}
	et, off := binary.BigEndian.Uint16(frame[12:14]), 14
	if et == 0x8100 {
		if len(frame) < 18 {
			return n, fmt.Errorf("lldp frame: %d bytes, shorter than a tagged Ethernet header", len(frame))
		}
		et, off = binary.BigEndian.Uint16(frame[16:18]), 18
	}
	if et != EtherType {
		return n, fmt.Errorf("lldp frame: ethertype %#04x, not LLDP (%#04x)", et, EtherType)
	}
	n, err := decodeLLDPDU(frame[off:])
	if err != nil {
		return n, fmt.Errorf("lldp frame: %w", err)
	}
	return n, nil
}

func decodeLLDPDU(b []byte) (Neighbor, error) {
	n := Neighbor{Source: v1.LLDPSourceFrame}
	seen := map[int]bool{}
	for i := 0; ; i++ {
		if len(b) == 0 {
			if i < 3 {
				return Neighbor{}, fmt.Errorf("the LLDPDU ends after %d TLVs, before the chassis ID, port ID and TTL", i)
			}
			return n, nil // no End TLV: accepted
		}
		if len(b) < 2 {
			return Neighbor{}, fmt.Errorf("TLV %d: a truncated header (%d byte)", i, len(b))
		}
		h := binary.BigEndian.Uint16(b)
		typ, length := int(h>>9), int(h&0x1ff)
		if len(b)-2 < length {
			return Neighbor{}, fmt.Errorf("TLV %d (type %d): length %d, only %d bytes left", i, typ, length, len(b)-2)
		}
		v := b[2 : 2+length]
		b = b[2+length:]
		if i < 3 && typ != i+1 {
			return Neighbor{}, fmt.Errorf("TLV %d: type %d, want %d (chassis ID, port ID and TTL come first)", i, typ, i+1)
		}
		if seen[typ] && typ >= tlvChassisID && typ <= tlvSysName {
			return Neighbor{}, fmt.Errorf("TLV %d: type %d repeated", i, typ)
		}
		seen[typ] = true
		switch typ {
		case tlvEnd:
			if length != 0 {
				return Neighbor{}, fmt.Errorf("TLV %d: end TLV of length %d", i, length)
			}
			return n, nil
		case tlvChassisID, tlvPortID:
			chassis := typ == tlvChassisID
			if length < 2 || length > 256 {
				return Neighbor{}, fmt.Errorf("TLV %d: %s of length %d, want 2-256", i, fieldNames[chassis], length)
			}
			id, kind := decodeID(v[0], v[1:], chassis)
			if chassis {
				n.ChassisID, n.ChassisIDType = id, kind
			} else {
				n.PortID, n.PortIDType = id, kind
			}
		case tlvTTL:
			if length < 2 {
				return Neighbor{}, fmt.Errorf("TLV %d: TTL of length %d, want 2", i, length)
			}
			n.TTL = time.Duration(binary.BigEndian.Uint16(v)) * time.Second
		case tlvPortDescr:
			n.PortDescr = text(string(v))
		case tlvSysName:
			n.SysName = text(string(v))
		}
	}
}

// decodeID formats a chassis or port ID by its subtype.
func decodeID(subtype byte, v []byte, chassis bool) (id, kind string) {
	kind, ok := idNames[chassis][subtype]
	if !ok {
		kind = fmt.Sprintf("subtype%d", subtype)
	}
	switch {
	case subtype == macSubtype[chassis] && len(v) == 6:
		return net.HardwareAddr(v).String(), kind
	case subtype == addrSubtype[chassis] && len(v) >= 1:
		if a, ok := netip.AddrFromSlice(v[1:]); ok && ((v[0] == 1 && a.Is4()) || (v[0] == 2 && a.Is6())) {
			return a.String(), kind
		}
	}
	return idText(v), kind
}

// EncodeFrame builds an LLDPDU frame from src to the LLDP group address:
// chassis ID (a MAC address when it parses as one, else locally
// assigned), port ID (interface name subtype), TTL, the port description
// and system name when set, End. Tests and the lab send it.
func EncodeFrame(src net.HardwareAddr, n Neighbor) ([]byte, error) {
	if len(src) != 6 {
		return nil, fmt.Errorf("lldp frame: source %q is not a MAC address", src)
	}
	if n.TTL < 0 || n.TTL > 65535*time.Second {
		return nil, fmt.Errorf("lldp frame: ttl %s is outside 0-65535s", n.TTL)
	}
	b := append(append(append([]byte{}, MulticastAddr...), src...), EtherType>>8, EtherType&0xff)
	var err error
	tlv := func(typ int, v []byte) {
		if len(v) > 511 && err == nil {
			err = fmt.Errorf("lldp frame: TLV type %d of %d bytes, more than 511", typ, len(v))
		}
		b = binary.BigEndian.AppendUint16(b, uint16(typ<<9|len(v)&0x1ff))
		b = append(b, v...)
	}
	for _, id := range []struct {
		s       string
		chassis bool
		field   string
	}{{n.ChassisID, true, "chassis ID"}, {n.PortID, false, "port ID"}} {
		if id.s == "" || len(id.s) > 255 {
			return nil, fmt.Errorf("lldp frame: %s %s must be 1-255 bytes", id.field, v1.Clip(id.s))
		}
		if mac, e := net.ParseMAC(id.s); e == nil && len(mac) == 6 {
			tlv(map[bool]int{true: tlvChassisID, false: tlvPortID}[id.chassis], append([]byte{macSubtype[id.chassis]}, mac...))
		} else {
			sub := byte(7) // locally assigned
			if !id.chassis {
				sub = 5 // interface name
			}
			tlv(map[bool]int{true: tlvChassisID, false: tlvPortID}[id.chassis], append([]byte{sub}, id.s...))
		}
	}
	tlv(tlvTTL, binary.BigEndian.AppendUint16(nil, uint16(n.TTL/time.Second)))
	if n.PortDescr != "" {
		tlv(tlvPortDescr, []byte(n.PortDescr))
	}
	if n.SysName != "" {
		tlv(tlvSysName, []byte(n.SysName))
	}
	tlv(tlvEnd, nil)
	if err != nil {
		return nil, err
	}
	for len(b) < 60 { // Ethernet minimum, without the FCS
		b = append(b, 0)
	}
	return b, nil
}
