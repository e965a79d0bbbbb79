package v1

import "time"

// ConditionType names a condition (design.md lists them).
type ConditionType string

// Rail conditions.
const (
	ConditionLinkUp         ConditionType = "LinkUp"
	ConditionAddressesReady ConditionType = "AddressesReady"
	ConditionMTUReady       ConditionType = "MTUReady"
	ConditionRoutingReady   ConditionType = "RoutingReady"
	ConditionGIDReady       ConditionType = "GIDReady"
	ConditionQoSReady       ConditionType = "QoSReady"
	ConditionDCQCNReady     ConditionType = "DCQCNReady"
	ConditionPCIeLinkOK     ConditionType = "PCIeLinkOK"
	ConditionGPUAffinityOK  ConditionType = "GPUAffinityOK"
	// ConditionPeerReachable and ConditionBandwidthOK come from probes.
	ConditionPeerReachable ConditionType = "PeerReachable"
	ConditionBandwidthOK   ConditionType = "BandwidthOK"
	// ConditionCablingOK comes from the LLDP cabling cross-check: the
	// rail reaches the planned leaf port and no other rail reaches it.
	ConditionCablingOK ConditionType = "CablingOK"
)

// Node conditions.
const (
	ConditionNVMLReady    ConditionType = "NVMLReady"
	ConditionPeerMemReady ConditionType = "PeerMemReady"
	// ConditionControllerConnected comes with the controller client.
	ConditionControllerConnected ConditionType = "ControllerConnected"
)

// ConditionTypes lists every condition type, rail conditions first. New
// types may be added within v1: clients must accept types they do not know.
var ConditionTypes = []ConditionType{
	ConditionLinkUp, ConditionAddressesReady, ConditionMTUReady, ConditionRoutingReady, ConditionGIDReady,
	ConditionQoSReady, ConditionDCQCNReady, ConditionPCIeLinkOK, ConditionGPUAffinityOK,
	ConditionPeerReachable, ConditionBandwidthOK, ConditionCablingOK,
	ConditionNVMLReady, ConditionPeerMemReady, ConditionControllerConnected,
}

// ConditionStatus is a condition's status.
type ConditionStatus string

// Condition statuses. Unsupported is not a failure: the device cannot do
// it (the reason says why).
const (
	StatusTrue        ConditionStatus = "True"
	StatusFalse       ConditionStatus = "False"
	StatusUnknown     ConditionStatus = "Unknown"
	StatusUnsupported ConditionStatus = "Unsupported"
)

// ConditionStatuses lists the statuses.
var ConditionStatuses = []ConditionStatus{StatusTrue, StatusFalse, StatusUnknown, StatusUnsupported}

// Condition is one fact about a rail or the node. Since is when Status
// last changed.
type Condition struct {
	Type    ConditionType   `json:"type"`
	Status  ConditionStatus `json:"status"`
	Reason  string          `json:"reason"`
	Message string          `json:"message,omitempty"`
	Since   time.Time       `json:"since"`
}

// RailStatus is one rail's observed state: the tenant binding as applied,
// the host addresses, the RoCE v2 GID index of each address (-1: none) and
// the rail's conditions.
type RailStatus struct {
	Rail         int           `json:"rail"`
	Netdev       string        `json:"netdev"`
	RDMADevice   string        `json:"rdma_device"`
	Tenant       *TenantConfig `json:"tenant,omitempty"`
	IPv4         string        `json:"ipv4,omitempty"`
	IPv6         string        `json:"ipv6,omitempty"`
	GIDIndexIPv4 int           `json:"gid_index_ipv4"`
	GIDIndexIPv6 int           `json:"gid_index_ipv6"`
	Conditions   []Condition   `json:"conditions"`
	// LLDP is the rail's LLDP neighbour, the leaf port it is cabled to
	// (nil: none seen, or LLDP is off).
	LLDP *LLDPNeighbor `json:"lldp,omitempty"`
}

// LLDP neighbour sources.
const (
	LLDPSourceLldpctl = "lldpctl"
	LLDPSourceFrame   = "frame"
)

// LLDPNeighbor is what a rail's LLDP neighbour (the leaf) says about
// itself: its chassis ID and system name, and the port ID and description
// of the port the rail is cabled to. Source is where the agent read it:
// "lldpctl" (lldpd) or "frame" (an LLDPDU it received itself); Seen is
// when.
type LLDPNeighbor struct {
	ChassisID string    `json:"chassis_id"`
	SysName   string    `json:"sys_name,omitempty"`
	PortID    string    `json:"port_id"`
	PortDescr string    `json:"port_descr,omitempty"`
	Source    string    `json:"source"`
	Seen      time.Time `json:"seen"`
}

// NodeStatus is a node's observed state: what the agent serves at
// /v1/status and sends to the controller (PUT /v1/nodes/{node}/status).
type NodeStatus struct {
	Node              string       `json:"node"`
	Version           string       `json:"agent_version"`
	AppliedGeneration int64        `json:"applied_generation"`
	Inventory         *Inventory   `json:"inventory"`
	Rails             []RailStatus `json:"rails"`
	Conditions        []Condition  `json:"conditions"`
	// Probes are the latest probe results, one per peer and kind.
	Probes        []ProbeResult `json:"probes,omitempty"`
	LastReconcile time.Time     `json:"last_reconcile"`
	LastError     string        `json:"last_error,omitempty"`
}

// Probe tools.
const (
	ProbeToolBandwidth    = "ib_write_bw"
	ProbeToolLatency      = "ib_write_lat"
	ProbeToolReachability = "rping"
)

// Probe GID families: the address family of the GID a probe used.
const (
	ProbeFamilyIPv4 = "ipv4"
	ProbeFamilyIPv6 = "ipv6"
)

// ProbeResult is one probe between a rail of this node and the same (or,
// opted in, another) rail of a peer: bandwidth, latency or reachability,
// by Tool. Error is set when the probe could not run or failed; the
// measurement of the tool that ran is set otherwise.
type ProbeResult struct {
	Rail     int    `json:"rail"`
	PeerNode string `json:"peer_node"`
	PeerRail int    `json:"peer_rail"`
	// Tool is ProbeToolBandwidth, ProbeToolLatency or ProbeToolReachability.
	Tool string `json:"tool"`
	// Family is the GID family the probe used, ProbeFamilyIPv4 or
	// ProbeFamilyIPv6 ("" not said).
	Family string    `json:"family,omitempty"`
	Time   time.Time `json:"time"`
	// Reachable is the RDMA CM reachability (rping); nil when not probed.
	Reachable *bool           `json:"reachable,omitempty"`
	Bandwidth *BandwidthProbe `json:"bandwidth,omitempty"`
	Latency   *LatencyProbe   `json:"latency,omitempty"`
	Error     string          `json:"error,omitempty"`
}

// BandwidthProbe is an ib_write_bw result.
type BandwidthProbe struct {
	AvgGbps      float64 `json:"avg_gbps"`
	PeakGbps     float64 `json:"peak_gbps"`
	MessageBytes int64   `json:"message_bytes"`
	Iterations   int64   `json:"iterations"`
}

// LatencyProbe is an ib_write_lat result, in microseconds.
type LatencyProbe struct {
	MinUs     float64 `json:"min_us"`
	TypicalUs float64 `json:"typical_us"`
	P99Us     float64 `json:"p99_us"`
	P999Us    float64 `json:"p99_9_us"`
	// MessageBytes and Iterations are the test's parameters.
	MessageBytes int64 `json:"message_bytes"`
	Iterations   int64 `json:"iterations"`
}
