package qos

import (
	"fmt"
	"sort"
	"strings"
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
	// (DCQCNParams lists them).
	NP map[string]int64
	RP map[string]int64
}

// paramRange is a parameter's documented range.
type paramRange struct{ min, max int64 }

const u32max = 1<<32 - 1

// DCQCNParams are the generic DCQCN parameter names and their ranges
// (NVIDIA's DCQCN parameter table; units: µs, bytes, Mb/s, 1/1024).
var DCQCNParams = map[string]map[string]paramRange{
	"np": {
		"cnp_dscp":              {0, 63},
		"cnp_prio":              {0, 7},
		"min_time_between_cnps": {0, u32max},
	},
	"rp": {
		"clamp_tgt_rate":             {0, 1},
		"clamp_tgt_rate_ati":         {0, 1},
		"time_reset":                 {0, u32max},
		"byte_reset":                 {0, u32max},
		"threshold":                  {1, 31},
		"ai_rate":                    {1, u32max},
		"hai_rate":                   {1, u32max},
		"min_dec_fac":                {1, 100},
		"min_rate":                   {0, u32max},
		"max_rate":                   {0, u32max},
		"rate_to_set_on_first_cnp":   {0, u32max},
		"dce_tcp_g":                  {0, 1023},
		"dce_tcp_rtt":                {1, 131071},
		"rate_reduce_monitor_period": {0, u32max},
		"initial_alpha_value":        {0, 1023},
		"gd":                         {0, 15},
	},
}

// Validate reports every invalid field of the profile (named under
// prefix, "qos") and, separately, warnings for settings that are legal but
// will not give a lossless RoCE class.
func (p Profile) Validate(prefix string) (warnings []string, errs []error) {
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", prefix, field, fmt.Sprintf(format, args...)))
	}
	switch p.Trust {
	case "", "dscp", "pcp":
	default:
		fail("trust", "%q is not one of dscp, pcp", p.Trust)
	}
	switch p.DCBX {
	case "", "host":
	default:
		fail("dcbx", "%q is not host (the agent configures QoS from the host)", p.DCBX)
	}
	seen := map[int]bool{}
	for i, prio := range p.PFC {
		if prio < 0 || prio > 7 {
			fail(fmt.Sprintf("pfc_priorities[%d]", i), "priority %d is outside 0-7", prio)
		}
		if seen[prio] {
			fail(fmt.Sprintf("pfc_priorities[%d]", i), "priority %d is listed twice", prio)
		}
		seen[prio] = true
	}
	for _, d := range sortedKeys(p.DSCPToPriority) {
		prio := p.DSCPToPriority[d]
		if d < 0 || d > 63 {
			fail(fmt.Sprintf("dscp_to_priority[%d]", d), "DSCP %d is outside 0-63", d)
		}
		if prio < 0 || prio > 7 {
			fail(fmt.Sprintf("dscp_to_priority[%d]", d), "priority %d is outside 0-7", prio)
		}
	}
	if p.Trust == "dscp" && len(p.DSCPToPriority) == 0 {
		fail("dscp_to_priority", "trust dscp needs at least one DSCP mapped")
	}
	mapped := map[int]bool{}
	for _, prio := range p.DSCPToPriority {
		mapped[prio] = true
	}
	for _, prio := range p.PFC {
		if !mapped[prio] && len(p.DSCPToPriority) > 0 {
			warnings = append(warnings, fmt.Sprintf("%s.pfc_priorities: priority %d has PFC but no DSCP maps to it", prefix, prio))
		}
	}
	if p.RoCETos != nil {
		tos := *p.RoCETos
		if tos < 0 || tos > 255 {
			fail("roce_tos", "%d is outside 0-255 (a ToS byte: DSCP<<2 | ECN)", tos)
		} else {
			dscp := tos >> 2
			prio, ok := p.DSCPToPriority[dscp]
			switch {
			case !ok:
				warnings = append(warnings, fmt.Sprintf("%s.roce_tos: ToS %d is DSCP %d, which dscp_to_priority does not map", prefix, tos, dscp))
			case !seen[prio] && p.PFC != nil:
				warnings = append(warnings, fmt.Sprintf("%s.roce_tos: ToS %d is DSCP %d on priority %d, which has no PFC", prefix, tos, dscp, prio))
			}
		}
	}
	switch p.RoCEMode {
	case "", "RoCE v2", "IB/RoCE v1":
	default:
		fail("roce_mode", "%q is not one of \"RoCE v2\", \"IB/RoCE v1\"", p.RoCEMode)
	}
	if e := p.ETS; e != nil {
		total := 0
		for tc := 0; tc < 8; tc++ {
			if e.PrioTC[tc] < 0 || e.PrioTC[tc] > 7 {
				fail(fmt.Sprintf("ets.prio_tc[%d]", tc), "TC %d is outside 0-7", e.PrioTC[tc])
			}
			switch e.TSA[tc] {
			case "strict", "vendor":
			case "ets":
				total += e.BW[tc]
			default:
				fail(fmt.Sprintf("ets.tsa[%d]", tc), "%q is not one of strict, ets, vendor", e.TSA[tc])
			}
			if e.BW[tc] < 0 || e.BW[tc] > 100 {
				fail(fmt.Sprintf("ets.bw[%d]", tc), "%d is outside 0-100", e.BW[tc])
			}
		}
		if total != 0 && total != 100 {
			fail("ets.bw", "the ets classes' shares add up to %d, not 100", total)
		}
	}
	if d := p.DCQCN; d != nil {
		for i, prio := range d.Priorities {
			if prio < 0 || prio > 7 {
				fail(fmt.Sprintf("dcqcn.priorities[%d]", i), "priority %d is outside 0-7", prio)
			}
		}
		for _, point := range []string{"np", "rp"} {
			params := d.params(point)
			for _, name := range sortedKeys(params) {
				r, ok := DCQCNParams[point][name]
				if !ok {
					fail(fmt.Sprintf("dcqcn.%s.%s", point, name), "unknown parameter (known: %s)", strings.Join(sortedKeys(DCQCNParams[point]), ", "))
					continue
				}
				if v := params[name]; v < r.min || v > r.max {
					fail(fmt.Sprintf("dcqcn.%s.%s", point, name), "%d is outside %d-%d", v, r.min, r.max)
				}
			}
		}
	}
	return warnings, errs
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
