package agent

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/roce-agent/roce-agent/nic/linkengine"
)

// NCCLEnvFile is the NCCL hand-off's name under the state directory.
const NCCLEnvFile = "nccl.env"

// NCCLEnv renders the env file NCCL jobs can source: the rail devices and
// ports (NCCL_IB_HCA), the RoCE v2 GID index of the rail addresses when
// every rail agrees (NCCL_IB_GID_INDEX), and the traffic class from the
// QoS profile (NCCL_IB_TC). The second result explains what was left out.
func NCCLEnv(rails []RailStatus, tos *int) ([]byte, []string) {
	sorted := append([]RailStatus(nil), rails...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Rail < sorted[j].Rail })
	var hcas []string
	gids := map[int]bool{}
	missing := false
	for _, r := range sorted {
		if r.RDMADevice == "" {
			continue
		}
		hcas = append(hcas, r.RDMADevice+":1")
		switch {
		case r.GIDIndexIPv4 >= 0:
			gids[r.GIDIndexIPv4] = true
		case r.GIDIndexIPv6 >= 0:
			gids[r.GIDIndexIPv6] = true
		default:
			missing = true
		}
	}
	var b bytes.Buffer
	var notes []string
	b.WriteString("# Written by roce-agent: the rail RDMA devices and their RoCE v2 GID index.\n")
	if len(hcas) > 0 {
		fmt.Fprintf(&b, "NCCL_IB_HCA=%s\n", strings.Join(hcas, ","))
	}
	switch {
	case len(gids) == 1 && !missing:
		for g := range gids {
			fmt.Fprintf(&b, "NCCL_IB_GID_INDEX=%d\n", g)
		}
	case len(hcas) > 0 && missing:
		notes = append(notes, "NCCL_IB_GID_INDEX left out: a rail has no RoCE v2 GID for its address yet")
	case len(gids) > 1:
		notes = append(notes, fmt.Sprintf("NCCL_IB_GID_INDEX left out: rails disagree (%d different indexes); set it per job", len(gids)))
	}
	if tos != nil {
		fmt.Fprintf(&b, "NCCL_IB_TC=%d\n", *tos)
	}
	return b.Bytes(), notes
}

// writeIfChanged replaces path atomically only when the content differs.
func writeIfChanged(path string, data []byte) (bool, error) {
	if old, err := linkengine.ReadStateFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err := linkengine.WriteFileAtomic(path, data, 0o644); err != nil {
		return false, err
	}
	return true, nil
}

func ncclPath(stateDir string) string { return filepath.Join(stateDir, NCCLEnvFile) }
