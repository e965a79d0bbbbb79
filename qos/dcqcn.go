package qos

import (
	"fmt"
	"path"
	"strconv"
)

// DCQCN backends, chosen by what the device exposes:
//   - MLNX_OFED sysfs: /sys/class/net/<if>/ecn/roce_{np,rp}/<param> and
//     enable/<prio> (per-priority enable);
//   - upstream mlx5 debugfs: /sys/kernel/debug/mlx5/<pci>/cc_params/
//     {np,rp}_<param> (no per-priority enable: that is firmware NVCONFIG);
//   - Broadcom bnxt_re configfs: /sys/kernel/config/bnxt_re/<dev>/ports/<n>/cc/
//     (hex values, committed by writing apply).
// Anything else (rxe, veth, other drivers) is unsupported.

var ofedNames = map[string]map[string]string{
	"np": {"cnp_dscp": "cnp_dscp", "cnp_prio": "cnp_802p_prio", "min_time_between_cnps": "min_time_between_cnps"},
	"rp": {"clamp_tgt_rate": "clamp_tgt_rate", "clamp_tgt_rate_ati": "clamp_tgt_rate_after_time_inc",
		"time_reset": "rpg_time_reset", "byte_reset": "rpg_byte_reset", "threshold": "rpg_threshold",
		"ai_rate": "rpg_ai_rate", "hai_rate": "rpg_hai_rate", "min_dec_fac": "rpg_min_dec_fac",
		"min_rate": "rpg_min_rate", "max_rate": "rpg_max_rate", "rate_to_set_on_first_cnp": "rate_to_set_on_first_cnp",
		"dce_tcp_g": "dce_tcp_g", "dce_tcp_rtt": "dce_tcp_rtt", "rate_reduce_monitor_period": "rate_reduce_monitor_period",
		"initial_alpha_value": "initial_alpha_value", "gd": "rpg_gd"},
}

var debugfsNames = map[string]map[string]string{
	"np": {"cnp_dscp": "np_cnp_dscp", "cnp_prio": "np_cnp_prio", "min_time_between_cnps": "np_min_time_between_cnps"},
	"rp": {"clamp_tgt_rate": "rp_clamp_tgt_rate", "clamp_tgt_rate_ati": "rp_clamp_tgt_rate_ati",
		"time_reset": "rp_time_reset", "byte_reset": "rp_byte_reset", "threshold": "rp_threshold",
		"ai_rate": "rp_ai_rate", "hai_rate": "rp_hai_rate", "min_dec_fac": "rp_min_dec_fac",
		"min_rate": "rp_min_rate", "max_rate": "rp_max_rate", "rate_to_set_on_first_cnp": "rp_rate_to_set_on_first_cnp",
		"dce_tcp_g": "rp_dce_tcp_g", "dce_tcp_rtt": "rp_dce_tcp_rtt", "rate_reduce_monitor_period": "rp_rate_reduce_monitor_period",
		"initial_alpha_value": "rp_initial_alpha_value", "gd": "rp_gd"},
}

var bnxtNames = map[string]map[string]string{
	"np": {"cnp_dscp": "cnp_dscp", "cnp_prio": "cnp_prio"},
	"rp": {},
}

// dcqcnWrite is one parameter to converge.
type dcqcnWrite struct {
	file string
	want int64
}

func (e *Engine) planDCQCN(p Profile, t Target) ([]Change, string, error) {
	d := p.DCQCN
	if d == nil || (d.Enabled == nil && len(d.NP) == 0 && len(d.RP) == 0) {
		return nil, "", nil
	}
	ofedDir := path.Join("/class/net", t.Netdev, "ecn")
	debugDir := path.Join("/kernel/debug/mlx5", t.PCI, "cc_params")
	port := t.Port
	if port == 0 {
		port = 1
	}
	var (
		backend string
		names   map[string]map[string]string
		fileOf  func(point, file string) string
		setup   []Change
		writes  []dcqcnWrite
		hex     bool
	)
	switch {
	case e.Files.Exists(path.Join(ofedDir, "roce_np")):
		backend, names = "MLNX_OFED ecn sysfs", ofedNames
		fileOf = func(point, file string) string { return path.Join(ofedDir, "roce_"+point, file) }
		if d.Enabled != nil {
			v := int64(0)
			if *d.Enabled {
				v = 1
			}
			prios := p.dcqcnPriorities()
			if len(prios) == 0 {
				return nil, "dcqcn.enabled needs dcqcn.priorities or qos.pfc_priorities", nil
			}
			for _, point := range []string{"np", "rp"} {
				for _, prio := range prios {
					f := path.Join(ofedDir, "roce_"+point, "enable", strconv.Itoa(prio))
					if !e.Files.Exists(f) {
						return nil, fmt.Sprintf("%s has no %s", backend, e.Files.HostPath(f)), nil
					}
					writes = append(writes, dcqcnWrite{f, v})
				}
			}
		}
	case t.PCI != "" && e.Files.Exists(debugDir):
		backend, names = "mlx5 debugfs cc_params", debugfsNames
		fileOf = func(_, file string) string { return path.Join(debugDir, file) }
		if d.Enabled != nil && !*d.Enabled {
			return nil, "upstream mlx5 has no per-priority DCQCN switch: it is firmware configuration (mlxconfig ROCE_CC_PRIO_MASK)", nil
		}
	case t.Driver == "bnxt_en" && t.RDMADevice != "" && e.Files.Exists("/kernel/config/bnxt_re"):
		backend, names, hex = "bnxt_re configfs cc", bnxtNames, true
		devDir := path.Join("/kernel/config/bnxt_re", t.RDMADevice)
		ccDir := path.Join(devDir, "ports", strconv.Itoa(port), "cc")
		fileOf = func(_, file string) string { return path.Join(ccDir, file) }
		if !e.Files.Exists(devDir) {
			setup = append(setup, Change{Command: "mkdir " + e.Files.HostPath(devDir), Knob: KnobDCQCN, Was: "no bnxt_re configfs group for " + t.RDMADevice, do: func() error { return e.Files.Mkdir(devDir) }})
		}
		if d.Enabled != nil {
			v := int64(0)
			if *d.Enabled {
				v = 1
			}
			writes = append(writes, dcqcnWrite{path.Join(ccDir, "ecn_enable"), v})
		}
	default:
		why := "no DCQCN interface"
		switch {
		case t.RDMADevice == "":
			why = "the rail has no RDMA device"
		case t.Driver == "mlx5_core":
			why = fmt.Sprintf("mlx5 without %s (debugfs not mounted at /sys/kernel/debug, or the firmware does not allow cc_params) and without MLNX_OFED's %s", e.Files.HostPath(debugDir), e.Files.HostPath(path.Join(ofedDir, "roce_np")))
		case t.Driver == "bnxt_en":
			why = fmt.Sprintf("bnxt without %s (Broadcom's out-of-tree bnxt_re driver, configfs mounted)", e.Files.HostPath("/kernel/config/bnxt_re"))
		case t.Driver != "":
			why = fmt.Sprintf("driver %s exposes no DCQCN interface", t.Driver)
		}
		return nil, why, nil
	}
	for _, point := range []string{"np", "rp"} {
		params := d.params(point)
		for _, name := range sortedKeys(params) {
			file, ok := names[point][name]
			if !ok {
				return nil, fmt.Sprintf("%s has no %s.%s", backend, point, name), nil
			}
			f := fileOf(point, file)
			if len(setup) == 0 && !e.Files.Exists(f) {
				return nil, fmt.Sprintf("%s has no %s.%s (%s)", backend, point, name, e.Files.HostPath(f)), nil
			}
			writes = append(writes, dcqcnWrite{f, params[name]})
		}
	}
	out := append([]Change(nil), setup...)
	for _, w := range writes {
		was := ""
		if len(setup) == 0 {
			raw, err := e.Files.ReadString(w.file)
			if err != nil {
				return nil, "", fmt.Errorf("read %s: %w", e.Files.HostPath(w.file), err)
			}
			cur, err := strconv.ParseInt(raw, 0, 64)
			if err != nil {
				return nil, "", fmt.Errorf("read %s: %q is not a number", e.Files.HostPath(w.file), raw)
			}
			// debugfs prints the u32 signed.
			if cur < 0 {
				cur &= u32max
			}
			if cur == w.want {
				continue
			}
			was = fmt.Sprintf("%s %d", path.Base(w.file), cur)
		}
		v := strconv.FormatInt(w.want, 10)
		if hex {
			v = fmt.Sprintf("0x%x", w.want)
		}
		c := e.echo(w.file, v)
		c.Knob, c.Was = KnobDCQCN, was
		out = append(out, c)
	}
	if hex && len(out) > len(setup) {
		apply := path.Join(path.Dir(writes[0].file), "apply")
		c := e.echo(apply, "0x1")
		c.Knob = KnobDCQCN
		out = append(out, c)
	}
	return out, "", nil
}
