package agent

import (
	"fmt"
	"net/netip"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/gpu/topology"
	"github.com/roce-agent/roce-agent/nic/linkengine"

	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/qos"
)

// Condition statuses (api/v1).
const (
	StatusTrue        = v1.StatusTrue
	StatusFalse       = v1.StatusFalse
	StatusUnknown     = v1.StatusUnknown
	StatusUnsupported = v1.StatusUnsupported
)

// Condition is one fact about a rail or the node, as design.md lists them:
// the wire type itself.
type Condition = v1.Condition

// RailStatus is one rail's observed state: the wire type itself.
type RailStatus = v1.RailStatus

// NodeStatus is what /v1/status serves and what the agent sends to the
// controller. AppliedGeneration is the generation of the config of the
// last reconcile that converged.
type NodeStatus struct {
	Node              string       `json:"node"`
	Version           string       `json:"agent_version"`
	AppliedGeneration int64        `json:"applied_generation"`
	Inventory         *Inventory   `json:"inventory"`
	Rails             []RailStatus `json:"rails"`
	Conditions        []Condition  `json:"conditions"`
	// Probes are the last probe results, one per peer, tool and family.
	Probes        []v1.ProbeResult `json:"probes,omitempty"`
	LastReconcile time.Time        `json:"last_reconcile"`
	LastError     string           `json:"last_error,omitempty"`
}

// conditionSet keeps transition times across reconciles.
type conditionSet map[v1.ConditionType]Condition

// set records a condition, keeping Since when the status did not change.
func (cs conditionSet) set(key v1.ConditionType, now time.Time, c Condition) Condition {
	if old, ok := cs[key]; ok && old.Status == c.Status {
		c.Since = old.Since
	} else {
		c.Since = now
	}
	cs[key] = c
	return c
}

func cond(typ v1.ConditionType, ok bool, reason, msg string) Condition {
	s := StatusFalse
	if ok {
		s = StatusTrue
	}
	return Condition{Type: typ, Status: s, Reason: reason, Message: msg}
}

// railConditions derives a rail's conditions from the inventory, the
// link engine's result and desired state, the QoS plan after apply, and
// the GID table.
func railConditions(inv *Inventory, r topology.Rail, desired *linkengine.RailLink, link *linkengine.RailResult, profile qos.Profile, qosPlan *qos.Plan, fs *nic.FS, netdev nic.NetdevState, netdevErr error) (RailStatus, []Condition) {
	rs := RailStatus{Rail: r.Rail, Netdev: r.Netdev, RDMADevice: r.RDMADevice, GIDIndexIPv4: -1, GIDIndexIPv6: -1}
	var out []Condition
	if netdevErr != nil {
		out = append(out, Condition{Type: v1.ConditionLinkUp, Status: StatusUnknown, Reason: "ReadFailed", Message: netdevErr.Error()})
	} else {
		out = append(out, cond(v1.ConditionLinkUp, netdev.Up, map[bool]string{true: "OperUp", false: "OperDown"}[netdev.Up], ""))
	}
	if desired == nil {
		for _, t := range []v1.ConditionType{v1.ConditionAddressesReady, v1.ConditionMTUReady, v1.ConditionRoutingReady, v1.ConditionGIDReady} {
			out = append(out, Condition{Type: t, Status: StatusUnknown, Reason: "NotManaged", Message: "no address configured for the rail"})
		}
	} else {
		if desired.IPv4.IsValid() {
			rs.IPv4 = desired.IPv4.String()
		}
		if desired.IPv6.IsValid() {
			rs.IPv6 = desired.IPv6.String()
		}
		converged := link != nil && link.Converged
		reason, msg := "Converged", ""
		if link != nil && link.Conflict != "" {
			reason, msg = "Conflict", link.Conflict
		} else if link != nil && link.Err != nil {
			reason, msg = "ApplyFailed", link.Err.Error()
		}
		out = append(out, cond(v1.ConditionAddressesReady, converged, reason, msg))
		out = append(out, cond(v1.ConditionMTUReady, netdevErr == nil && netdev.MTU == desired.MTU, "MTU", fmt.Sprintf("mtu %d, want %d", netdev.MTU, desired.MTU)))
		out = append(out, cond(v1.ConditionRoutingReady, converged, reason, msg))
		gidOK, gidMsg := true, ""
		if r.RDMADevice == "" {
			out = append(out, Condition{Type: v1.ConditionGIDReady, Status: StatusUnsupported, Reason: "NoRDMADevice"})
		} else {
			for _, a := range []struct {
				p   netip.Prefix
				idx *int
			}{{desired.IPv4, &rs.GIDIndexIPv4}, {desired.IPv6, &rs.GIDIndexIPv6}} {
				if !a.p.IsValid() {
					continue
				}
				i, err := fs.GIDIndex(r.RDMADevice, 1, a.p.Addr(), r.Netdev)
				if err != nil {
					gidOK, gidMsg = false, err.Error()
					continue
				}
				*a.idx = i
			}
			out = append(out, cond(v1.ConditionGIDReady, gidOK, map[bool]string{true: "RoCEv2GIDPresent", false: "GIDMissing"}[gidOK], gidMsg))
		}
	}
	out = append(out, qosConditions(r, profile, qosPlan)...)
	if n := inv.NIC(r.RDMADevice); n != nil && n.PCIe != nil {
		ok := !n.PCIe.SpeedDegraded() && !n.PCIe.WidthDegraded()
		out = append(out, cond(v1.ConditionPCIeLinkOK, ok, map[bool]string{true: "AtCapability", false: "Degraded"}[ok], n.PCIe.String()))
	} else {
		out = append(out, Condition{Type: v1.ConditionPCIeLinkOK, Status: StatusUnsupported, Reason: "NoPCIDevice"})
	}
	if len(r.GPUs) == 0 {
		out = append(out, Condition{Type: v1.ConditionGPUAffinityOK, Status: StatusUnknown, Reason: "NoGPU"})
	} else {
		ok := r.Level <= topology.LevelPXB
		out = append(out, cond(v1.ConditionGPUAffinityOK, ok, r.Level.String(), ""))
	}
	return rs, out
}

// qosConditions are QoSReady and DCQCNReady from the plan made after
// apply: no change left and no error means ready.
func qosConditions(r topology.Rail, p qos.Profile, plan *qos.Plan) []Condition {
	dcqcnSet, qosSet := p.DCQCN != nil, p.HasDCBOrToS()
	state := func(typ v1.ConditionType, configured bool, groups ...qos.Group) Condition {
		if plan == nil || !configured {
			return Condition{Type: typ, Status: StatusUnknown, Reason: "NotConfigured"}
		}
		in := func(g qos.Group) bool {
			for _, x := range groups {
				if x == g {
					return true
				}
			}
			return false
		}
		for _, e := range plan.Errs {
			if e.Rail == r.Rail {
				return Condition{Type: typ, Status: StatusFalse, Reason: "ReadFailed", Message: e.Err.Error()}
			}
		}
		for _, u := range plan.Unsupported {
			if u.Rail == r.Rail && in(u.Group) {
				return Condition{Type: typ, Status: StatusUnsupported, Reason: "Unsupported", Message: fmt.Sprintf("%s: %s", u.Group, u.Reason)}
			}
		}
		for _, c := range plan.Changes {
			if c.Rail == r.Rail && in(c.Group) {
				return Condition{Type: typ, Status: StatusFalse, Reason: "Pending", Message: c.Command}
			}
		}
		return Condition{Type: typ, Status: StatusTrue, Reason: "Converged"}
	}
	return []Condition{state(v1.ConditionQoSReady, qosSet, qos.GroupDCB, qos.GroupToS), state(v1.ConditionDCQCNReady, dcqcnSet, qos.GroupDCQCN)}
}
