package diag

import (
	"context"
	"fmt"
	"strings"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/qos"
)

// QoS checks: each knob of the configured QoS profile against each rail
// NIC, read through the agent's QoS planner (dcbnl, the rdma_cm configfs,
// the DCQCN interface of the driver).

// qosKnobCheck is one QoS check: the knobs it covers, the group whose
// unsupported reasons apply, and whether the profile sets it.
type qosKnobCheck struct {
	knobs []qos.Knob
	group qos.Group
	set   func(p qos.Profile) string // what the profile asks for; "" when nothing
}

func init() {
	knobCheck := func(id, title, doc, remedy string, k qosKnobCheck) Check {
		return Check{ID: id, Title: title, Doc: doc, Remedy: remedy,
			Run: func(_ context.Context, e *Env) []Result { return checkQoSKnob(e, k) }}
	}
	register(
		knobCheck("QOS-TRUST-001", "DSCP trust and host DCBX",
			"With `qos.dcbx: host` the NIC's DCBX must be host-managed (a switch's LLDP cannot override the config); with `qos.trust` the port must trust DSCP (MLNX_OFED's `qos/trust`; upstream mlx5 trusts DSCP once it has DSCP APP entries, see QOS-DSCP-001). A port that trusts PCP puts RoCE, which carries no VLAN tag on a routed link, on priority 0 without PFC.",
			"`roce-agent apply` sets them (`dcb dcbx set dev <netdev> host ieee`); if the switch keeps winning, disable the NIC firmware's LLDP agent (mlxconfig LLDP_NB_DCBX_P1=0) and reboot or reset the NIC",
			qosKnobCheck{knobs: []qos.Knob{qos.KnobDCBX, qos.KnobTrust}, group: qos.GroupDCB, set: func(p qos.Profile) string {
				var s []string
				if p.DCBX != "" {
					s = append(s, "dcbx "+p.DCBX)
				}
				if p.Trust != "" {
					s = append(s, "trust "+p.Trust)
				}
				return strings.Join(s, ", ")
			}}),
		knobCheck("QOS-PFC-001", "PFC on the RoCE priority",
			"PFC must be enabled on exactly the profile's priorities (dcbnl IEEE PFC enable bits): RoCE without PFC on its priority drops under congestion and retransmits (go-back-N), which collapses throughput.",
			"`roce-agent apply` sets it (on mlx5 a PFC change flaps the link once); the leaf port must have PFC on the same priority, or pause frames are ignored",
			qosKnobCheck{knobs: []qos.Knob{qos.KnobPFC}, group: qos.GroupDCB, set: func(p qos.Profile) string {
				if p.PFC == nil {
					return ""
				}
				return fmt.Sprintf("pfc on %v", p.PFC)
			}}),
		knobCheck("QOS-DSCP-001", "DSCP-to-priority map",
			"Each DSCP value of the profile must map to its priority in the NIC's DCB APP table (selector DSCP): RoCE data (DSCP 26 by default) to the PFC priority, CNPs (DSCP 48) to theirs.",
			"`roce-agent apply` sets them (`dcb app add dev <netdev> dscp-prio 26:3 48:6`); entries that another tool added for the same DSCP are replaced on mlx5 and deleted elsewhere",
			qosKnobCheck{knobs: []qos.Knob{qos.KnobDSCP}, group: qos.GroupDCB, set: func(p qos.Profile) string {
				if len(p.DSCPToPriority) == 0 {
					return ""
				}
				return fmt.Sprintf("%d DSCP entries", len(p.DSCPToPriority))
			}}),
		knobCheck("QOS-ETS-001", "ETS traffic classes",
			"With `qos.ets` the NIC's ETS configuration (priority to traffic class, TSA and bandwidth per class) must equal the profile.",
			"`roce-agent apply` sets it (`dcb ets set dev <netdev> ...`)",
			qosKnobCheck{knobs: []qos.Knob{qos.KnobETS}, group: qos.GroupDCB, set: func(p qos.Profile) string {
				if p.ETS == nil {
					return ""
				}
				return "ets"
			}}),
		knobCheck("QOS-TOS-001", "default RoCE ToS and mode",
			"rdma_cm's default ToS (`/sys/kernel/config/rdma_cm/<dev>/ports/<n>/default_roce_tos`) must be the profile's `roce_tos` (DSCP<<2 | ECN), and the default RoCE mode RoCE v2: connections that do not set a ToS (most MPI and storage stacks) otherwise go out with DSCP 0, on a priority without PFC.",
			"`roce-agent apply` sets it; configfs must be mounted at /sys/kernel/config and rdma_cm loaded (`modprobe rdma_cm`); NCCL sets the traffic class itself from NCCL_IB_TC (the agent's nccl.env)",
			qosKnobCheck{knobs: []qos.Knob{qos.KnobToS}, group: qos.GroupToS, set: func(p qos.Profile) string {
				var s []string
				if p.RoCETos != nil {
					s = append(s, fmt.Sprintf("tos %d", *p.RoCETos))
				}
				if p.RoCEMode != "" {
					s = append(s, p.RoCEMode)
				}
				return strings.Join(s, ", ")
			}}),
		knobCheck("QOS-DCQCN-001", "DCQCN parameters",
			"The NIC's congestion control (DCQCN) parameters must equal the profile's: the CNP DSCP and priority, and the reaction and notification point parameters, read from the driver's interface (mlx5 debugfs cc_params, MLNX_OFED's ecn sysfs, bnxt_re configfs).",
			"`roce-agent apply` sets them; upstream mlx5 needs debugfs mounted at /sys/kernel/debug (root only); per-priority ECN enablement on upstream mlx5 is firmware configuration (mlxconfig ROCE_CC_PRIO_MASK_P1)",
			qosKnobCheck{knobs: []qos.Knob{qos.KnobDCQCN}, group: qos.GroupDCQCN, set: func(p qos.Profile) string {
				if p.DCQCN == nil {
					return ""
				}
				return "dcqcn"
			}}),
	)
}

func checkQoSKnob(e *Env, k qosKnobCheck) []Result {
	d, rs := desiredView(e)
	if rs != nil {
		return rs
	}
	if d.QoS == nil {
		return []Result{SkipResult("node", "the desired state has no qos profile")}
	}
	asked := k.set(d.Profile)
	if asked == "" {
		return []Result{SkipResult("node", "the qos profile does not set this")}
	}
	var out []Result
	for _, t := range agent.QoSTargets(d.Inventory) {
		subject := railSubject(t.Netdev, t.RDMADevice)
		if res, ok := qosRailProblem(e, d.QoS, t, k.group); ok {
			out = append(out, res.OnRail(t.Rail))
			continue
		}
		var was, want []string
		for _, c := range d.QoS.Changes {
			if c.Rail != t.Rail || !hasKnob(k.knobs, c.Knob) {
				continue
			}
			if c.Was != "" {
				was = append(was, c.Was)
			}
			want = append(want, c.Command)
		}
		if len(want) > 0 {
			observed := strings.Join(was, "; ")
			if observed == "" {
				observed = "not set"
			}
			out = append(out, FailResult(subject, observed, asked, "apply would run: "+strings.Join(want, "; ")).OnRail(t.Rail))
			continue
		}
		out = append(out, PassResult(subject, asked).OnRail(t.Rail))
	}
	if len(out) == 0 {
		return noRails(e)
	}
	return out
}

func hasKnob(list []qos.Knob, k qos.Knob) bool {
	for _, x := range list {
		if x == k {
			return true
		}
	}
	return false
}

// qosRailProblem is the result for a rail whose QoS state could not be
// read, or whose NIC does not support the group.
func qosRailProblem(e *Env, plan *qos.Plan, t qos.Target, group qos.Group) (Result, bool) {
	subject := railSubject(t.Netdev, t.RDMADevice)
	for _, err := range plan.Errs {
		if err.Rail == t.Rail {
			return UnknownResult(subject, fmt.Sprintf("the NIC's QoS state could not be read: %v", err.Err)), true
		}
	}
	for _, u := range plan.Unsupported {
		if u.Rail != t.Rail || u.Group != group {
			continue
		}
		switch {
		case !e.Privileged && (strings.Contains(u.Reason, "debugfs") || strings.Contains(u.Reason, "permission denied")):
			return PrivilegeResult(subject, "needs root: "+u.Reason), true
		case strings.Contains(u.Reason, "not in this network namespace") || strings.Contains(u.Reason, "socket unavailable"):
			return UnknownResult(subject, u.Reason), true
		}
		return WarnResult(subject, "unsupported", "supported", u.Reason).
			Remedied("the NIC or its driver cannot take this setting: use a NIC and driver that can (ConnectX with mlx5, bnxt_re), or set it with the vendor's tool and leave it out of the profile"), true
	}
	return Result{}, false
}
