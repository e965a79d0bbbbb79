package v1

// InventorySchema names the version of the inventory JSON contract.
const InventorySchema = "roce-agent.inventory/v1"

// Where a GPU list came from (Inventory.GPUSource, GPU.Source).
const (
	GPUSourceNVML  = "nvml"
	GPUSourceSysfs = "sysfs"
)

// Inventory is what a node has: GPUs, RDMA NICs, the PCIe affinity of
// every GPU x NIC pair, the rails and what looks wrong. Lists are never
// null.
type Inventory struct {
	// Schema is InventorySchema.
	Schema    string     `json:"schema"`
	Node      string     `json:"node"`
	SysfsRoot string     `json:"sysfs_root"`
	GPUSource string     `json:"gpu_source"`
	NVML      NVMLStatus `json:"nvml"`
	GPUs      []GPU      `json:"gpus"`
	NICs      []NIC      `json:"nics"`
	Affinity  []Affinity `json:"affinity"`
	Rails     []Rail     `json:"rails"`
	NonRail   []NonRail  `json:"non_rail"`
	// Warnings are problems found, each with a stable "kind:" prefix
	// (docs/inventory.md lists the kinds).
	Warnings []string `json:"warnings"`
}

// NVMLStatus says whether NVML was asked and what it answered.
type NVMLStatus struct {
	Queried       bool   `json:"queried"`
	Available     bool   `json:"available"`
	DriverVersion string `json:"driver_version,omitempty"`
	Error         string `json:"error,omitempty"`
}

// GPU is one GPU.
type GPU struct {
	// Index is NVML's index, or the position in PCI address order when the
	// list comes from sysfs.
	Index int `json:"index"`
	// PCI is the PCI address in sysfs form, "0000:1b:00.0".
	PCI   string `json:"pci"`
	UUID  string `json:"uuid"`
	Model string `json:"model"`
	// NUMA is the GPU's NUMA node, -1 when unknown.
	NUMA   int       `json:"numa"`
	Source string    `json:"source"`
	PCIe   *PCIeLink `json:"pcie"`
}

// PCIeLink is a PCIe function's link: trained and maximum speed (GT/s)
// and width.
type PCIeLink struct {
	CurrentSpeed float64 `json:"current_speed_gts"`
	MaxSpeed     float64 `json:"max_speed_gts"`
	CurrentWidth int     `json:"current_width"`
	MaxWidth     int     `json:"max_width"`
}

// GID is one populated entry of a port's GID table.
type GID struct {
	Index int    `json:"index"`
	GID   string `json:"gid"`
	// IP is the address the GID carries: dotted IPv4 for an IPv4-mapped
	// RoCE GID, IPv6 otherwise.
	IP     string `json:"ip"`
	Type   string `json:"type"` // "RoCE v2" or "IB/RoCE v1"
	Netdev string `json:"netdev"`
}

// Port is one port of an RDMA device.
type Port struct {
	Port      int     `json:"port"`
	State     string  `json:"port_state"` // "ACTIVE", "DOWN", ...
	PhysState string  `json:"phys_state"` // "LinkUp", "Disabled", ...
	Rate      string  `json:"rate"`       // as sysfs prints it, "400 Gb/sec (4X NDR)"
	RateGbps  float64 `json:"rate_gbps"`
	LinkLayer string  `json:"link_layer"` // "Ethernet" (RoCE) or "InfiniBand"
	GIDs      []GID   `json:"gids"`
}

// NIC is an RDMA device with its netdev and PCI function. The first port's
// fields are inline (RoCE functions have one port each); further ports are
// in OtherPorts.
type NIC struct {
	RDMADevice string `json:"rdma_device"`
	Netdev     string `json:"netdev"`
	// PCI is "" for a software device on a virtual netdev.
	PCI      string `json:"pci"`
	NUMA     int    `json:"numa"`
	Driver   string `json:"driver"`
	Vendor   string `json:"vendor"`
	Firmware string `json:"firmware"`
	NodeGUID string `json:"node_guid"`
	HCAType  string `json:"hca_type"`
	BoardID  string `json:"board_id"`
	// Software is true for soft-RoCE (rxe) and soft-iWARP (siw) devices.
	Software bool      `json:"software"`
	MAC      string    `json:"mac"`
	MTU      int       `json:"mtu"`
	PCIe     *PCIeLink `json:"pcie"`
	Port
	OtherPorts []Port `json:"other_ports,omitempty"`
}

// Level is a PCIe distance in the `nvidia-smi topo -m` legend.
type Level string

// The legend, closest first. LevelUnknown is for a pair where one side has
// no PCI function or is not in sysfs, and for a rail without GPUs.
const (
	LevelPIX     Level = "PIX"  // traverses at most a single PCIe switch
	LevelPXB     Level = "PXB"  // traverses multiple PCIe switches, no host bridge
	LevelPHB     Level = "PHB"  // traverses a PCIe host bridge (the CPU)
	LevelNODE    Level = "NODE" // traverses host bridges within one NUMA node
	LevelSYS     Level = "SYS"  // traverses the SMP interconnect between NUMA nodes
	LevelUnknown Level = "N/A"
)

// Levels lists the legend, closest first.
var Levels = []Level{LevelPIX, LevelPXB, LevelPHB, LevelNODE, LevelSYS, LevelUnknown}

// Affinity is the PCIe path between one GPU and one NIC.
type Affinity struct {
	GPU        int    `json:"gpu"`
	RDMADevice string `json:"rdma_device"`
	Level      Level  `json:"level"`
	// CommonAncestor is the deepest PCI function both sit below; the host
	// bridge ("pci0000:17") for a pair on one host bridge with no common
	// function; "" across host bridges.
	CommonAncestor string `json:"common_ancestor"`
	// Switches counts the PCIe switches the path traverses.
	Switches       int  `json:"switches"`
	SameHostBridge bool `json:"same_host_bridge"`
	SameNUMA       bool `json:"same_numa"`
	GPUNUMA        int  `json:"gpu_numa"`
	NICNUMA        int  `json:"nic_numa"`
}

// Rail is one rail: a NIC and the GPUs that use it.
type Rail struct {
	Rail       int    `json:"rail"`
	RDMADevice string `json:"rdma_device"`
	Netdev     string `json:"netdev"`
	PCI        string `json:"pci"`
	GPUs       []int  `json:"gpus"`
	// Level is the worst level between the rail's NIC and its GPUs
	// (LevelUnknown for a rail without GPUs).
	Level  Level `json:"level"`
	Pinned bool  `json:"pinned"`
	// Missing says why a pinned rail has no device on the host; empty
	// when it has one.
	Missing string `json:"missing,omitempty"`
}

// NonRail is an RDMA NIC that no rail uses, with the reason.
type NonRail struct {
	RDMADevice string `json:"rdma_device"`
	Netdev     string `json:"netdev"`
	PCI        string `json:"pci"`
	Reason     string `json:"reason"`
}
