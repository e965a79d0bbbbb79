package v1

// NodeConfig is the desired state of a node: what the agent converges the
// host to. It comes from the controller (GET /v1/nodes/{node}/config) or,
// in local mode, from the agent's config file (docs/config.md), whose keys
// are the same. Generation increases with every change the controller
// makes; a local file leaves it 0.
type NodeConfig struct {
	Generation int64            `json:"generation" mapstructure:"generation"`
	Node       NodeIdentity     `json:"node" mapstructure:"node"`
	Link       LinkConfig       `json:"link" mapstructure:"link"`
	Addressing AddressingConfig `json:"addressing" mapstructure:"addressing"`
	Rails      []RailConfig     `json:"rails,omitempty" mapstructure:"rails"`
	QoS        QoSConfig        `json:"qos" mapstructure:"qos"`
}

// NodeIdentity identifies the node.
type NodeIdentity struct {
	// Name defaults to the host name.
	Name string `json:"name" mapstructure:"name"`
	// Index selects the node's addresses in the addressing pools.
	Index *int `json:"index,omitempty" mapstructure:"index"`
}

// LinkConfig is the link engine's node-wide settings.
type LinkConfig struct {
	MTU int `json:"mtu" mapstructure:"mtu"`
	// IPv6SLAAC accepts router advertisements on rails (accept_ra=1)
	// instead of static addressing only.
	IPv6SLAAC bool `json:"ipv6_slaac" mapstructure:"ipv6_slaac"`
	// Routes are the prefixes every rail reaches through its leaf, for
	// rails that do not list their own.
	Routes  []string      `json:"routes,omitempty" mapstructure:"routes"`
	Routing RoutingConfig `json:"routing" mapstructure:"routing"`
}

// RoutingConfig places the per-rail tables and rules: rail n uses table
// TableBase+n and a source rule at priority RulePriorityBase+n.
type RoutingConfig struct {
	TableBase        int `json:"table_base" mapstructure:"table_base"`
	RulePriorityBase int `json:"rule_priority_base" mapstructure:"rule_priority_base"`
}

// AddressingConfig derives rail addresses: rail n takes pool n, the host
// is pool + 2*index + 1 and the leaf pool + 2*index.
type AddressingConfig struct {
	IPv4Pools []string `json:"ipv4_pools,omitempty" mapstructure:"ipv4_pools"`
	IPv6Pools []string `json:"ipv6_pools,omitempty" mapstructure:"ipv6_pools"`
}

// RailConfig is one rail's desired state: optionally pinned to a NIC (by
// netdev or RDMA device; otherwise the inventory's rail of that number),
// its host addresses (explicit, else from the addressing pools), the
// prefixes reached through its leaf, and its tenant.
type RailConfig struct {
	Rail       *int          `json:"rail" mapstructure:"rail"`
	Netdev     string        `json:"netdev,omitempty" mapstructure:"netdev"`
	RDMADevice string        `json:"rdma_device,omitempty" mapstructure:"rdma_device"`
	IPv4       string        `json:"ipv4,omitempty" mapstructure:"ipv4"`
	IPv6       string        `json:"ipv6,omitempty" mapstructure:"ipv6"`
	LeafIPv4   string        `json:"leaf_ipv4,omitempty" mapstructure:"leaf_ipv4"`
	LeafIPv6   string        `json:"leaf_ipv6,omitempty" mapstructure:"leaf_ipv6"`
	Routes     []string      `json:"routes,omitempty" mapstructure:"routes"`
	Tenant     *TenantConfig `json:"tenant,omitempty" mapstructure:"tenant"`
	// Peers are the rail's probe peers (from the controller).
	Peers []PeerConfig `json:"peers,omitempty" mapstructure:"peers"`
	// Leaf is the LLDP system name of the leaf the rail must reach, and
	// LeafPort the leaf's LLDP port ID (or port description) it must
	// reach: the cabling cross-check (condition CablingOK) compares them
	// with the rail's LLDP neighbour. Empty: not planned.
	Leaf     string `json:"leaf,omitempty" mapstructure:"leaf"`
	LeafPort string `json:"leaf_port,omitempty" mapstructure:"leaf_port"`
}

// TenantConfig is the tenant a rail belongs to (reported, not configured on
// the host: the leaf puts the port in the tenant's VRF).
type TenantConfig struct {
	ID  string `json:"id" mapstructure:"id"`
	VRF string `json:"vrf" mapstructure:"vrf"`
	VNI int    `json:"vni" mapstructure:"vni"`
}

// QoSConfig is the QoS profile of every rail NIC (docs/qos.md). Unset
// knobs are left alone. PFCPriorities distinguishes nil (leave PFC alone)
// from empty (PFC off on every priority).
type QoSConfig struct {
	Trust          string       `json:"trust,omitempty" mapstructure:"trust"`
	PFCPriorities  []int        `json:"pfc_priorities" mapstructure:"pfc_priorities"`
	DSCPToPriority map[int]int  `json:"dscp_to_priority,omitempty" mapstructure:"dscp_to_priority"`
	DCBX           string       `json:"dcbx,omitempty" mapstructure:"dcbx"`
	ETS            *ETSConfig   `json:"ets,omitempty" mapstructure:"ets"`
	RoCETos        *int         `json:"roce_tos,omitempty" mapstructure:"roce_tos"`
	RoCEMode       string       `json:"roce_mode,omitempty" mapstructure:"roce_mode"`
	DCQCN          *DCQCNConfig `json:"dcqcn,omitempty" mapstructure:"dcqcn"`
}

// ETSConfig is the traffic class layout, eight entries each: priority to
// TC, each TC's scheduling (strict, ets or vendor) and bandwidth share.
type ETSConfig struct {
	PrioTC []int    `json:"prio_tc" mapstructure:"prio_tc"`
	TSA    []string `json:"tsa" mapstructure:"tsa"`
	BW     []int    `json:"bw" mapstructure:"bw"`
}

// DCQCNConfig is DCQCN in generic parameter names (DCQCNParams).
type DCQCNConfig struct {
	// Enabled turns the reaction and notification points on (or off) on
	// Priorities (default: the PFC priorities); nil leaves it alone.
	Enabled    *bool `json:"enabled,omitempty" mapstructure:"enabled"`
	Priorities []int `json:"priorities,omitempty" mapstructure:"priorities"`
	// NP and RP are notification and reaction point parameters by name.
	NP map[string]int64 `json:"np,omitempty" mapstructure:"np"`
	RP map[string]int64 `json:"rp,omitempty" mapstructure:"rp"`
}

// Empty reports a QoS section that sets nothing.
func (q QoSConfig) Empty() bool {
	return q.Trust == "" && q.PFCPriorities == nil && len(q.DSCPToPriority) == 0 && q.DCBX == "" && q.ETS == nil &&
		q.RoCETos == nil && q.RoCEMode == "" && q.DCQCN == nil
}

// NoDesiredState says why the configuration gives the agent nothing to
// converge ("" when it does): no rail with an address (explicit or from the
// addressing pools) and no qos section. Such a configuration must never
// reach an engine: an empty desired state would read as "remove
// everything".
func (c NodeConfig) NoDesiredState() string {
	if len(c.Addressing.IPv4Pools) > 0 || len(c.Addressing.IPv6Pools) > 0 {
		return ""
	}
	for _, r := range c.Rails {
		if r.IPv4 != "" || r.IPv6 != "" {
			return ""
		}
	}
	if !c.QoS.Empty() {
		return ""
	}
	if len(c.Rails) == 0 {
		return "it has no rails (rails[] is empty or absent) and no qos section"
	}
	return "no rail has an address (rails[].ipv4, rails[].ipv6 or addressing pools) and there is no qos section"
}

// QoSWarnings are legal QoS settings that will not give a lossless class.
func (c NodeConfig) QoSWarnings() []string {
	w, _ := c.QoS.Check("qos")
	return w
}
