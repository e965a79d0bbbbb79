// Package lldp reads a rail's LLDP neighbour (the leaf port its cable
// reaches), from lldpd (`lldpctl -f json`) or from LLDPDUs it receives
// itself on an AF_PACKET socket, and cross-checks the rails' cabling:
// every rail reaches the leaf port the plan names for it, and no two
// rails reach one leaf port (CheckCabling). It is a leaf package: the
// standard library, golang.org/x/sys/unix, api/v1 and probe only.
package lldp

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// Neighbor is what an LLDP neighbour says about itself: its chassis ID and
// system name, the ID and description of the port it sent from, and for
// how long the information holds.
type Neighbor struct {
	// ChassisID is a MAC address (aa:bb:cc:dd:ee:ff) or an IP address for
	// those subtypes, else the ID as text (hex when unprintable).
	ChassisID string
	// ChassisIDType is the ID's subtype in lldpctl's words: mac, ip,
	// ifname, ifalias, local, ...
	ChassisIDType string
	SysName       string
	// PortID is formatted like ChassisID; PortIDType is its subtype.
	PortID     string
	PortIDType string
	PortDescr  string
	// TTL is how long the neighbour's information holds (0 in a shutdown
	// LLDPDU: forget the neighbour; unknown from lldpctl without a ttl).
	TTL time.Duration
	// Source is v1.LLDPSourceLldpctl or v1.LLDPSourceFrame; Seen is when
	// it was read.
	Source string
	Seen   time.Time
	// Others are further neighbours on the same interface (something
	// between the NIC and the leaf forwards LLDP, or a stale neighbour);
	// they have no Others themselves.
	Others []Neighbor
}

// ErrNoNeighbor says an interface has no LLDP neighbour (none known to
// lldpd, or no LLDPDU received in time).
var ErrNoNeighbor = errors.New("no LLDP neighbour")

// ErrPermission says listening for LLDP frames needs CAP_NET_RAW.
var ErrPermission = errors.New("listening for LLDP frames needs CAP_NET_RAW")

// Leaf names the neighbour: its system name, else its chassis ID.
func (n Neighbor) Leaf() string {
	if n.SysName != "" {
		return n.SysName
	}
	return n.ChassisID
}

// Port names the neighbour's port: its port ID, but its description when
// the ID is a MAC address and a description is there (lldpd's default on
// an interface without an alias: ID the MAC, description the name).
func (n Neighbor) Port() string {
	if n.PortIDType == "mac" && n.PortDescr != "" {
		return n.PortDescr
	}
	return n.PortID
}

// String is "leaf0 port swp1".
func (n Neighbor) String() string {
	return n.Leaf() + " port " + n.Port()
}

// HasPort reports whether the neighbour's port is port, by ID or
// description.
func (n Neighbor) HasPort(port string) bool {
	return port != "" && (n.PortID == port || n.PortDescr == port)
}

// IsLeaf reports whether the neighbour is leaf, by system name or chassis
// ID.
func (n Neighbor) IsLeaf(leaf string) bool {
	return leaf != "" && (n.SysName == leaf || n.ChassisID == leaf)
}

// API is the neighbour as the status reports it.
func (n Neighbor) API() *v1.LLDPNeighbor {
	return &v1.LLDPNeighbor{ChassisID: n.ChassisID, SysName: n.SysName, PortID: n.PortID, PortDescr: n.PortDescr, Source: n.Source, Seen: n.Seen}
}

// maxText bounds a text field (a TLV holds at most 511 bytes).
const maxText = 511

// text makes a string from the wire safe to show and to use as a metric
// label: valid UTF-8, control and other unprintable characters replaced
// with '?', at most 511 bytes.
func text(s string) string {
	if len(s) > maxText {
		s = s[:maxText]
	}
	if utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
}

// idText formats an ID that is not an address: the text when it is
// printable, else hex bytes (aa:bb:...), as lldpctl shows them.
func idText(b []byte) string {
	s := string(b)
	if utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	return hexColon(b)
}

func hexColon(b []byte) string {
	var sb strings.Builder
	for i, c := range b {
		if i > 0 {
			sb.WriteByte(':')
		}
		fmt.Fprintf(&sb, "%02x", c)
	}
	return sb.String()
}
