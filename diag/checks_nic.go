package diag

import (
	"context"
	"fmt"
	"sort"
	"strings"
)

// NIC checks: the rail ports' state and speed.

func init() {
	register(
		Check{
			ID: "NIC-PORT-001", Title: "rail port active",
			Doc:    "Each rail's RDMA port must be ACTIVE with its physical state LinkUp (`/sys/class/infiniband/<dev>/ports/<n>/state`, `phys_state`); a rail whose pinned NIC is missing fails here too.",
			Remedy: "check the cable or optic and the leaf port (admin up, no errdisable); `ip link set <netdev> up`; for a port stuck in Polling, check the speed and FEC the leaf expects",
			Run:    checkPortActive,
		},
		Check{
			ID: "NIC-SPEED-001", Title: "rail port speed uniform",
			Doc:    "Every active rail port should run at the same rate (`ports/<n>/rate`): the expected rate is the most common among the rails, and a rail below it fails.",
			Remedy: "a rail slower than the others slows every collective to its speed: check the optic or cable (reseat it), the leaf port's speed and FEC, and the NIC's link mode (`ethtool <netdev>`)",
			Run:    checkPortSpeed,
		},
	)
}

// noRails is the result of a rail check on a host without rails.
func noRails(e *Env) []Result {
	if e.Inventory == nil {
		return []Result{UnknownResult("node", fmt.Sprintf("no inventory: %v", e.InventoryErr))}
	}
	return []Result{SkipResult("node", "the host has no rails (no RDMA NIC)")}
}

func checkPortActive(_ context.Context, e *Env) []Result {
	rails := e.Rails()
	if len(rails) == 0 {
		return noRails(e)
	}
	var out []Result
	for _, r := range rails {
		n := e.RailNIC(r)
		subject := railSubject(r.Netdev, r.RDMADevice)
		switch {
		case r.Missing != "":
			out = append(out, FailResult(subject, "missing", "a NIC", r.Missing).OnRail(r.Rail))
		case n == nil:
			out = append(out, UnknownResult(subject, "the inventory has no NIC for the rail").OnRail(r.Rail))
		case n.Port.State == "":
			out = append(out, UnknownResult(subject, fmt.Sprintf("%s port %d has no readable state", n.RDMADevice, n.Port.Port)).OnRail(r.Rail))
		case !n.Port.Active():
			out = append(out, FailResult(subject, portState(n.Port.State, n.Port.PhysState), "ACTIVE/LinkUp",
				fmt.Sprintf("%s port %d is not active: RoCE traffic cannot flow", n.RDMADevice, n.Port.Port)).OnRail(r.Rail))
		default:
			out = append(out, PassResult(subject, portState(n.Port.State, n.Port.PhysState)).OnRail(r.Rail))
		}
	}
	return out
}

func portState(state, phys string) string {
	if phys == "" {
		return state
	}
	return state + "/" + phys
}

// railSubject names a rail's NIC as "netdev" (the RDMA device when the
// netdev is unknown).
func railSubject(netdev, rdma string) string {
	if netdev != "" {
		return netdev
	}
	if rdma != "" {
		return rdma
	}
	return "rail"
}

func checkPortSpeed(_ context.Context, e *Env) []Result {
	rails := e.Rails()
	if len(rails) == 0 {
		return noRails(e)
	}
	// The expected speed is the most common one among active rails (the
	// fastest on a tie): one slow rail stands out.
	count := map[float64]int{}
	for _, r := range rails {
		if n := e.RailNIC(r); n != nil && n.Port.Active() && n.Port.RateGbps > 0 {
			count[n.Port.RateGbps]++
		}
	}
	var speeds []float64
	for s := range count {
		speeds = append(speeds, s)
	}
	sort.Slice(speeds, func(i, j int) bool {
		if count[speeds[i]] != count[speeds[j]] {
			return count[speeds[i]] > count[speeds[j]]
		}
		return speeds[i] > speeds[j]
	})
	var out []Result
	for _, r := range rails {
		n := e.RailNIC(r)
		subject := railSubject(r.Netdev, r.RDMADevice)
		switch {
		case n == nil || r.Missing != "":
			out = append(out, SkipResult(subject, "the rail has no NIC (NIC-PORT-001)").OnRail(r.Rail))
		case !n.Port.Active():
			out = append(out, SkipResult(subject, "the port is not active (NIC-PORT-001)").OnRail(r.Rail))
		case n.Port.RateGbps <= 0:
			out = append(out, UnknownResult(subject, fmt.Sprintf("%s port %d rate %q is unreadable", n.RDMADevice, n.Port.Port, n.Port.Rate)).OnRail(r.Rail))
		case n.Port.RateGbps < speeds[0]:
			out = append(out, FailResult(subject, gbps(n.Port.RateGbps), gbps(speeds[0]),
				fmt.Sprintf("the port runs slower than the other rails (%s)", strings.TrimSpace(n.Port.Rate))).OnRail(r.Rail))
		default:
			out = append(out, PassResult(subject, gbps(n.Port.RateGbps)).OnRail(r.Rail))
		}
	}
	return out
}

func gbps(v float64) string { return fmt.Sprintf("%g Gb/s", v) }
