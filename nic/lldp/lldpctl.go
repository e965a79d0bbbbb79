package lldp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// maxLldpctlOutput bounds the JSON ParseLldpctlJSON takes.
const maxLldpctlOutput = 4 << 20

// ParseLldpctlJSON parses `lldpctl -f json` output into each local
// interface's neighbour (Source "lldpctl", Seen zero; an interface with
// several neighbours has the first, the others in Others). It knows
// lldpctl's shapes: "interface" is an object keyed by interface name when
// there is one neighbour and a list of such objects when there are
// several; "chassis" is keyed by the system name, or is the chassis
// itself when the neighbour sent none; IDs are {"type", "value"}; the TTL
// is the port's (or the chassis's, in older versions). An empty "lldp"
// object is no neighbours.
func ParseLldpctlJSON(data []byte) (map[string]Neighbor, error) {
	if len(data) > maxLldpctlOutput {
		return nil, fmt.Errorf("lldpctl json: %d bytes, more than %d", len(data), maxLldpctlOutput)
	}
	var doc struct {
		LLDP json.RawMessage `json:"lldp"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(data), &doc); err != nil {
		return nil, fmt.Errorf("lldpctl json: %w", err)
	}
	if len(doc.LLDP) == 0 {
		return nil, errors.New(`lldpctl json: no "lldp" object`)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(doc.LLDP, &top); err != nil {
		return nil, fmt.Errorf(`lldpctl json: "lldp": %w`, err)
	}
	out := map[string]Neighbor{}
	raw, ok := top["interface"]
	if !ok {
		return out, nil
	}
	var entries []map[string]json.RawMessage
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '[' {
		if err := json.Unmarshal(raw, &entries); err != nil {
			return nil, fmt.Errorf(`lldpctl json: "interface": %w`, err)
		}
	} else {
		var one map[string]json.RawMessage
		if err := json.Unmarshal(raw, &one); err != nil {
			return nil, fmt.Errorf(`lldpctl json: "interface": %w`, err)
		}
		entries = append(entries, one)
	}
	for i, e := range entries {
		names := make([]string, 0, len(e))
		for name := range e {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			n, err := parseLldpctlNeighbor(e[name])
			if err != nil {
				return nil, fmt.Errorf("lldpctl json: interface[%d] %s: %w", i, v1.Clip(name), err)
			}
			if prev, dup := out[name]; dup {
				prev.Others = append(prev.Others, n)
				out[name] = prev
				continue
			}
			out[name] = n
		}
	}
	return out, nil
}

// lldpctlID is {"type": "mac", "value": "..."}.
type lldpctlID struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

func parseLldpctlNeighbor(raw json.RawMessage) (Neighbor, error) {
	var e struct {
		Chassis map[string]json.RawMessage `json:"chassis"`
		Port    map[string]json.RawMessage `json:"port"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return Neighbor{}, err
	}
	n := Neighbor{Source: v1.LLDPSourceLldpctl}
	chassis := e.Chassis
	if !isID(chassis["id"]) {
		// Keyed by system name: {"leaf0": {"id": ...}}.
		if len(chassis) != 1 {
			return n, fmt.Errorf("chassis has %d keys and no id", len(chassis))
		}
		for name, body := range chassis {
			n.SysName = text(name)
			chassis = nil
			if err := json.Unmarshal(body, &chassis); err != nil {
				return n, fmt.Errorf("chassis %s: %w", v1.Clip(name), err)
			}
		}
	}
	id, err := parseID(chassis["id"], "chassis")
	if err != nil {
		return n, err
	}
	n.ChassisID, n.ChassisIDType = id.Value, id.Type
	if id, err = parseID(e.Port["id"], "port"); err != nil {
		return n, err
	}
	n.PortID, n.PortIDType = id.Value, id.Type
	if d, ok := e.Port["descr"]; ok {
		var s string
		if err := json.Unmarshal(d, &s); err != nil {
			return n, fmt.Errorf("port descr: %w", err)
		}
		n.PortDescr = text(s)
	}
	for _, m := range []map[string]json.RawMessage{e.Port, chassis} {
		if t, ok := m["ttl"]; ok {
			var s string
			if err := json.Unmarshal(t, &s); err != nil {
				return n, fmt.Errorf("ttl: %w", err)
			}
			secs, err := strconv.ParseUint(s, 10, 16)
			if err != nil {
				return n, fmt.Errorf("ttl %s: %w", v1.Clip(s), err)
			}
			n.TTL = time.Duration(secs) * time.Second
			break
		}
	}
	return n, nil
}

// isID reports whether a JSON value is an ID object ({"type", "value"}),
// not a chassis named "id".
func isID(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	_, t := m["type"]
	_, v := m["value"]
	return t && v && len(m) == 2
}

func parseID(raw json.RawMessage, what string) (lldpctlID, error) {
	var id lldpctlID
	if len(raw) == 0 {
		return id, fmt.Errorf("%s has no id", what)
	}
	if err := json.Unmarshal(raw, &id); err != nil {
		return id, fmt.Errorf("%s id: %w", what, err)
	}
	id.Value, id.Type = text(strings.TrimSpace(id.Value)), text(id.Type)
	if id.Value == "" {
		return id, fmt.Errorf("%s id is empty", what)
	}
	return id, nil
}
