package qos

import (
	"sort"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// Profile is the desired QoS of every rail NIC (config `qos:`). Zero
// values leave a knob alone.
type Profile struct {
	// Trust is "dscp" or "pcp"; "" leaves trust alone. On upstream mlx5
	// trust is implied by the DSCP APP entries.
	Trust string
	// PFC lists the priorities with PFC on (the others off); nil leaves
	// PFC alone.
	PFC []int
	// DSCPToPriority maps DSCP values to priorities. Only these DSCP
	// entries are managed; others are left alone.
	DSCPToPriority map[int]int
	// DCBX is "host" (the OS, not the switch's LLDP, owns the config) or
	// "" to leave it alone.
	DCBX string
	// ETS, when set, is the traffic class layout.
	ETS *ETSProfile
	// RoCETos is rdma_cm's default ToS byte (DSCP<<2 | ECN), nil to leave.
	RoCETos *int
	// RoCEMode is rdma_cm's default RoCE mode, "RoCE v2" or "IB/RoCE v1".
	RoCEMode string
	// DCQCN, when set, are the congestion control settings.
	DCQCN *DCQCNProfile
}

// Empty reports a profile that sets nothing.
func (p Profile) Empty() bool {
	return p.Trust == "" && p.PFC == nil && len(p.DSCPToPriority) == 0 && p.DCBX == "" && p.ETS == nil &&
		p.RoCETos == nil && p.RoCEMode == "" && p.DCQCN == nil
}

// ETSProfile is the traffic class layout: priority to TC, each TC's
// scheduling (strict, ets or vendor) and bandwidth share.
type ETSProfile struct {
	PrioTC [8]int
	TSA    [8]string
	BW     [8]int
}

// DCQCNProfile is DCQCN's settings in generic names, mapped per backend.
type DCQCNProfile struct {
	// Enabled turns the reaction and notification points on (or off) on
	// Priorities (default: the PFC priorities); nil leaves it alone.
	Enabled    *bool
	Priorities []int
	// NP and RP are notification and reaction point parameters by name
	// (v1.DCQCNParams lists them).
	NP map[string]int64
	RP map[string]int64
}

// u32max masks the u32 values debugfs prints signed.
const u32max = 1<<32 - 1

// FromConfig converts the config's qos section (api/v1) into the engine's
// profile. An ETS section whose lists are not 8 long is left out
// (QoSConfig.Check reports it).
func FromConfig(q v1.QoSConfig) Profile {
	p := Profile{Trust: q.Trust, PFC: q.PFCPriorities, DSCPToPriority: q.DSCPToPriority, DCBX: q.DCBX, RoCETos: q.RoCETos, RoCEMode: q.RoCEMode}
	if e := q.ETS; e != nil && len(e.PrioTC) == 8 && len(e.TSA) == 8 && len(e.BW) == 8 {
		var ets ETSProfile
		copy(ets.PrioTC[:], e.PrioTC)
		copy(ets.TSA[:], e.TSA)
		copy(ets.BW[:], e.BW)
		p.ETS = &ets
	}
	if d := q.DCQCN; d != nil {
		p.DCQCN = &DCQCNProfile{Enabled: d.Enabled, Priorities: d.Priorities, NP: d.NP, RP: d.RP}
	}
	return p
}

// Config is the profile as the config's qos section (api/v1).
func (p Profile) Config() v1.QoSConfig {
	q := v1.QoSConfig{Trust: p.Trust, PFCPriorities: p.PFC, DSCPToPriority: p.DSCPToPriority, DCBX: p.DCBX, RoCETos: p.RoCETos, RoCEMode: p.RoCEMode}
	if e := p.ETS; e != nil {
		q.ETS = &v1.ETSConfig{PrioTC: e.PrioTC[:], TSA: e.TSA[:], BW: e.BW[:]}
	}
	if d := p.DCQCN; d != nil {
		q.DCQCN = &v1.DCQCNConfig{Enabled: d.Enabled, Priorities: d.Priorities, NP: d.NP, RP: d.RP}
	}
	return q
}

// Validate reports every invalid field of the profile (named under
// prefix, "qos") and, separately, warnings for settings that are legal but
// will not give a lossless RoCE class (v1.QoSConfig.Check).
func (p Profile) Validate(prefix string) (warnings []string, errs []error) {
	return p.Config().Check(prefix)
}

// params returns the notification ("np") or reaction ("rp") point's
// parameters.
func (d *DCQCNProfile) params(point string) map[string]int64 {
	if point == "rp" {
		return d.RP
	}
	return d.NP
}

// HasDCBOrToS reports a profile that sets trust, PFC, the DSCP map, DCBX,
// ETS or the rdma_cm ToS and mode (QoSReady's knobs).
func (p Profile) HasDCBOrToS() bool {
	q := p
	q.DCQCN = nil
	return !q.Empty()
}

// dcqcnPriorities is where DCQCN is enabled: the listed priorities, else
// the PFC ones.
func (p Profile) dcqcnPriorities() []int {
	if p.DCQCN != nil && len(p.DCQCN.Priorities) > 0 {
		return p.DCQCN.Priorities
	}
	return p.PFC
}

func sortedKeys[K int | string, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
