package v1

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// ParamRange is a DCQCN parameter's documented range, inclusive.
type ParamRange struct{ Min, Max int64 }

const u32max = 1<<32 - 1

// DCQCNParams are the generic DCQCN parameter names of the notification
// ("np") and reaction ("rp") points and their ranges (NVIDIA's DCQCN
// parameter table; units: µs, bytes, Mb/s, 1/1024).
var DCQCNParams = map[string]map[string]ParamRange{
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

// Check reports every invalid field of the QoS section (named under
// prefix, "qos") and, separately, warnings for settings that are legal but
// will not give a lossless RoCE class.
func (q QoSConfig) Check(prefix string) (warnings []string, errs []error) {
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", prefix, field, fmt.Sprintf(format, args...)))
	}
	if e := q.ETS; e != nil && (len(e.PrioTC) != 8 || len(e.TSA) != 8 || len(e.BW) != 8) {
		fail("ets", "prio_tc, tsa and bw need 8 entries each (got %d, %d, %d)", len(e.PrioTC), len(e.TSA), len(e.BW))
	}
	switch q.Trust {
	case "", "dscp", "pcp":
	default:
		fail("trust", "%q is not one of dscp, pcp", q.Trust)
	}
	switch q.DCBX {
	case "", "host":
	default:
		fail("dcbx", "%q is not host (the agent configures QoS from the host)", q.DCBX)
	}
	seen := map[int]bool{}
	for i, prio := range q.PFCPriorities {
		if prio < 0 || prio > 7 {
			fail(fmt.Sprintf("pfc_priorities[%d]", i), "priority %d is outside 0-7", prio)
		}
		if seen[prio] {
			fail(fmt.Sprintf("pfc_priorities[%d]", i), "priority %d is listed twice", prio)
		}
		seen[prio] = true
	}
	for _, d := range slices.Sorted(maps.Keys(q.DSCPToPriority)) {
		prio := q.DSCPToPriority[d]
		if d < 0 || d > 63 {
			fail(fmt.Sprintf("dscp_to_priority[%d]", d), "DSCP %d is outside 0-63", d)
		}
		if prio < 0 || prio > 7 {
			fail(fmt.Sprintf("dscp_to_priority[%d]", d), "priority %d is outside 0-7", prio)
		}
	}
	if q.Trust == "dscp" && len(q.DSCPToPriority) == 0 {
		fail("dscp_to_priority", "trust dscp needs at least one DSCP mapped")
	}
	mapped := map[int]bool{}
	for _, prio := range q.DSCPToPriority {
		mapped[prio] = true
	}
	for _, prio := range q.PFCPriorities {
		if !mapped[prio] && len(q.DSCPToPriority) > 0 {
			warnings = append(warnings, fmt.Sprintf("%s.pfc_priorities: priority %d has PFC but no DSCP maps to it", prefix, prio))
		}
	}
	if q.RoCETos != nil {
		tos := *q.RoCETos
		if tos < 0 || tos > 255 {
			fail("roce_tos", "%d is outside 0-255 (a ToS byte: DSCP<<2 | ECN)", tos)
		} else {
			dscp := tos >> 2
			prio, ok := q.DSCPToPriority[dscp]
			switch {
			case !ok:
				warnings = append(warnings, fmt.Sprintf("%s.roce_tos: ToS %d is DSCP %d, which dscp_to_priority does not map", prefix, tos, dscp))
			case !seen[prio] && q.PFCPriorities != nil:
				warnings = append(warnings, fmt.Sprintf("%s.roce_tos: ToS %d is DSCP %d on priority %d, which has no PFC", prefix, tos, dscp, prio))
			}
		}
	}
	switch q.RoCEMode {
	case "", "RoCE v2", "IB/RoCE v1":
	default:
		fail("roce_mode", "%q is not one of \"RoCE v2\", \"IB/RoCE v1\"", q.RoCEMode)
	}
	if e := q.ETS; e != nil && len(e.PrioTC) == 8 && len(e.TSA) == 8 && len(e.BW) == 8 {
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
	if d := q.DCQCN; d != nil {
		for i, prio := range d.Priorities {
			if prio < 0 || prio > 7 {
				fail(fmt.Sprintf("dcqcn.priorities[%d]", i), "priority %d is outside 0-7", prio)
			}
		}
		for _, point := range []string{"np", "rp"} {
			params := d.NP
			if point == "rp" {
				params = d.RP
			}
			for _, name := range slices.Sorted(maps.Keys(params)) {
				r, ok := DCQCNParams[point][name]
				if !ok {
					fail(fmt.Sprintf("dcqcn.%s.%s", point, name), "unknown parameter (known: %s)", strings.Join(slices.Sorted(maps.Keys(DCQCNParams[point])), ", "))
					continue
				}
				if v := params[name]; v < r.Min || v > r.Max {
					fail(fmt.Sprintf("dcqcn.%s.%s", point, name), "%d is outside %d-%d", v, r.Min, r.Max)
				}
			}
		}
	}
	return warnings, errs
}
