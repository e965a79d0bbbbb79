package nic

import (
	"sort"

	"github.com/Mellanox/rdmamap"
)

// RdmamapLister lists the live host's RDMA devices with Mellanox/rdmamap.
// rdmamap reads fixed /sys paths, so it only serves the host tree; fixture
// trees use SysfsLister.
type RdmamapLister struct{}

// RDMADeviceNames returns rdmamap's device list, sorted.
func (RdmamapLister) RDMADeviceNames() ([]string, error) {
	names := rdmamap.GetRdmaDeviceList()
	sort.Strings(names)
	return names, nil
}

// NewLister returns the lister for a tree: rdmamap for the live /sys,
// SysfsLister for anything else.
func NewLister(s *FS) DeviceLister {
	if s.IsHost() {
		return RdmamapLister{}
	}
	return SysfsLister{FS: s}
}
