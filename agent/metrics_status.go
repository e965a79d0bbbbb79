package agent

import (
	"strconv"

	v1 "github.com/roce-agent/roce-agent/api/v1"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	descCond = desc("condition_status", "Condition status: 1 True, 0 False, -1 Unknown or Unsupported.", "rail", "type")
	descGID  = desc("rail_gid_index", "RoCE v2 GID index of the rail address.", "rail", "rdma_dev", "family")
	// descTenant lets dashboards and alerts select a tenant's rails: join
	// on (instance, rail).
	descTenant = desc("rail_tenant_info", "The tenant a rail is bound to (value 1; absent for a rail without a tenant).", "rail", "tenant", "vrf", "vni")
)

// statusPart renders the last reconcile's conditions and GID indexes.
type statusPart struct{}

func (statusPart) name() string { return "" }

func (statusPart) collect(ch chan<- prometheus.Metric, st *NodeStatus) []error {
	for _, rs := range st.Rails {
		rail := strconv.Itoa(rs.Rail)
		for _, cond := range rs.Conditions {
			gauge(ch, descCond, statusValue(cond.Status), rail, string(cond.Type))
		}
		if t := rs.Tenant; t != nil {
			gauge(ch, descTenant, 1, rail, t.ID, t.VRF, strconv.Itoa(t.VNI))
		}
		if rs.GIDIndexIPv4 >= 0 && rs.RDMADevice != "" {
			gauge(ch, descGID, float64(rs.GIDIndexIPv4), rail, rs.RDMADevice, "ipv4")
		}
		if rs.GIDIndexIPv6 >= 0 && rs.RDMADevice != "" {
			gauge(ch, descGID, float64(rs.GIDIndexIPv6), rail, rs.RDMADevice, "ipv6")
		}
	}
	for _, cond := range st.Conditions {
		gauge(ch, descCond, statusValue(cond.Status), "node", string(cond.Type))
	}
	return nil
}

func statusValue(s v1.ConditionStatus) float64 {
	switch s {
	case StatusTrue:
		return 1
	case StatusFalse:
		return 0
	}
	return -1
}
