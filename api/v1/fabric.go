package v1

import "time"

// PeerConfig is a probe peer of a rail: the same rail of another node of
// the rail's tenant, as the controller derives it (design.md section 6).
type PeerConfig struct {
	Node string `json:"node" mapstructure:"node"`
	Rail int    `json:"rail" mapstructure:"rail"`
	IPv4 string `json:"ipv4,omitempty" mapstructure:"ipv4"`
	IPv6 string `json:"ipv6,omitempty" mapstructure:"ipv6"`
}

// FabricPlan is what the reference controller serves from: the nodes, the
// per-rail address pools and the tenants. Every node's NodeConfig is
// derived from it: rail n of node i takes pool n's host address of index
// i; GPU g of a node uses rail g (rail-aligned servers); a rail belongs to
// the tenant that has its node (server isolation) or its GPU (GPU
// isolation) as a member; its probe peers are the same rail of the other
// members of that tenant.
type FabricPlan struct {
	// Rails is the number of rails (and GPUs) per node, 1-256.
	Rails int `json:"rails"`
	// Link, Addressing and QoS are every node's; link.routes default to
	// rail n's own pools (every rail n of the fabric, through its leaf).
	Link       LinkConfig       `json:"link"`
	Addressing AddressingConfig `json:"addressing"`
	QoS        QoSConfig        `json:"qos"`
	Probes     ProbePolicy      `json:"probes"`
	Nodes      []PlanNode       `json:"nodes"`
	Tenants    []Tenant         `json:"tenants"`
}

// ProbePolicy bounds the probe peers a rail is given.
type ProbePolicy struct {
	// MaxPeers is the most peers a rail's config lists (default 16): a
	// tenant rail with more members lists its nearest neighbours on a
	// ring of the members in node index order, MaxPeers/2 on each side,
	// so that the relation stays symmetric (a peer admits a prober only
	// if it lists it too) and a config's size does not grow with the
	// tenant.
	MaxPeers int `json:"max_peers,omitempty"`
}

// PlanNode is a node of the fabric and its index in the address pools,
// with, optionally, the leaf port each rail is cabled to (copied into the
// node config's rails[].leaf and leaf_port).
type PlanNode struct {
	Name    string        `json:"name"`
	Index   int           `json:"index"`
	Cabling []RailCabling `json:"cabling,omitempty"`
}

// RailCabling is where a rail of a node is cabled: the leaf's LLDP system
// name and, optionally, the leaf's LLDP port ID (or port description).
type RailCabling struct {
	Rail int    `json:"rail"`
	Leaf string `json:"leaf"`
	Port string `json:"port,omitempty"`
}

// Tenant is a tenant: its VRF and L3 VNI on the leaves, and its members.
type Tenant struct {
	ID      string         `json:"id"`
	VRF     string         `json:"vrf"`
	VNI     int            `json:"vni"`
	Members []TenantMember `json:"members"`
}

// TenantMember is a whole node (server isolation: GPUs empty) or some of
// its GPUs (GPU isolation: GPU g brings rail g).
type TenantMember struct {
	Node string `json:"node"`
	GPUs []int  `json:"gpus,omitempty"`
}

// Move moves a whole node, or some of its GPUs, to a tenant (POST
// /v1/moves): the rails change tenant and peers, their addresses stay.
// The GPUs leave whatever tenant had them.
type Move struct {
	// Node is the node moved; Nodes moves several at once (one change,
	// one new generation each), instead of Node.
	Node  string   `json:"node,omitempty"`
	Nodes []string `json:"nodes,omitempty"`
	// GPUs empty: the whole node.
	GPUs []int `json:"gpus,omitempty"`
	// Tenant is the destination; "" takes the GPUs out of every tenant.
	Tenant string `json:"tenant"`
}

// MoveResult says which nodes' configs a change rewrote.
type MoveResult struct {
	ChangedNodes []string `json:"changed_nodes"`
}

// Heartbeat is an agent's liveness (PUT /v1/nodes/{node}/lease), sent
// every few seconds; it costs the controller a lease renewal, not a status
// write.
type Heartbeat struct {
	AppliedGeneration int64 `json:"applied_generation"`
}

// NodeSummary is one node in GET /v1/nodes.
type NodeSummary struct {
	Name  string `json:"name"`
	Index int    `json:"index"`
	// Alive: the node's lease is held (a heartbeat within its TTL).
	Alive         bool       `json:"alive"`
	LastHeartbeat *time.Time `json:"last_heartbeat,omitempty"`
	// ConfigGeneration is the node's config as served, AppliedGeneration
	// the one its last status says it applied (0 before any status).
	ConfigGeneration  int64      `json:"config_generation"`
	AppliedGeneration int64      `json:"applied_generation"`
	Reported          *time.Time `json:"reported,omitempty"`
}

// NodeList is GET /v1/nodes.
type NodeList struct {
	Nodes []NodeSummary `json:"nodes"`
}

// TenantHealth is GET /v1/tenants/{tenant}/health: every member rail with
// what its node last reported, and the rail-pair probe matrix.
type TenantHealth struct {
	Tenant string       `json:"tenant"`
	Rails  []RailHealth `json:"rails"`
	// Healthy counts the rails that are alive, bound to this tenant as
	// applied and have no condition False.
	Healthy int `json:"healthy"`
	Total   int `json:"total"`
	// Pairs are the directed pairs of member rails some member's last
	// status has probe results for, by (node, rail, peer_node,
	// peer_rail); results naming a rail that is not a member now (stale
	// after a move) are left out. PairsOK counts the pairs that are OK,
	// PairsTotal is len(Pairs).
	Pairs      []ProbePair `json:"pairs"`
	PairsOK    int         `json:"pairs_ok"`
	PairsTotal int         `json:"pairs_total"`
}

// ProbePair is one directed pair of member rails of a tenant with the
// last result of each probe tool the prober reported for it.
type ProbePair struct {
	Node     string `json:"node"` // the prober
	Rail     int    `json:"rail"`
	PeerNode string `json:"peer_node"`
	PeerRail int    `json:"peer_rail"`
	// OK: every last result has no error (and none says reachable
	// false).
	OK bool `json:"ok"`
	// Results are the last result per tool and family (the latest
	// time), sorted by tool, then family.
	Results []ProbeResult `json:"results"`
}

// RailHealth is a member rail in TenantHealth.
type RailHealth struct {
	Node  string `json:"node"`
	Rail  int    `json:"rail"`
	Alive bool   `json:"alive"`
	// LastHeartbeat is the node's last heartbeat (to the second).
	LastHeartbeat *time.Time `json:"last_heartbeat,omitempty"`
	// Bound: the node's last status reports this rail in this tenant.
	Bound bool `json:"bound"`
	// AppliedGeneration is the generation of that status; ConfigGeneration
	// the node's current config.
	AppliedGeneration int64       `json:"applied_generation"`
	ConfigGeneration  int64       `json:"config_generation"`
	Conditions        []Condition `json:"conditions"`
}

// Error is the body of every controller error: what is wrong and, for a
// bad request body, the field ("members[2].gpus[0]").
type Error struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}
