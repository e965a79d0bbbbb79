package probe

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// Families a probe runs over: the GID (and so the RoCEv2 header) it uses.
const (
	FamilyIPv4 = "ipv4"
	FamilyIPv6 = "ipv6"
)

// Tools are the probe tools, in the order a round runs them: the cheap
// reachability check first, the NIC-filling bandwidth test last.
var Tools = []string{v1.ProbeToolReachability, v1.ProbeToolLatency, v1.ProbeToolBandwidth}

// ValidTool reports a known tool name.
func ValidTool(t string) bool {
	return t == v1.ProbeToolBandwidth || t == v1.ProbeToolLatency || t == v1.ProbeToolReachability
}

// ValidFamily reports a known family name.
func ValidFamily(f string) bool { return f == FamilyIPv4 || f == FamilyIPv6 }

// Limits on what a requester may ask a server to run: they bound the NIC
// time one request can take.
const (
	MaxMessageBytes = 8 << 20
	MaxIterations   = 1_000_000
	MaxPings        = 1000
)

// Test is what one probe runs: the tool, the family and its size. The
// requester sends it to the peer, which runs the matching server.
type Test struct {
	Tool   string `json:"tool"`
	Family string `json:"family"`
	// MessageBytes and Iterations size perftest runs (0: the tool's
	// default for the probe); Count is rping's number of pings.
	MessageBytes int `json:"message_bytes,omitempty"`
	Iterations   int `json:"iterations,omitempty"`
	Count        int `json:"count,omitempty"`
}

// Defaults for a probe's size: a 64 KiB write for bandwidth (the RDMA
// MTU is 4 KiB: many packets per message), 2 bytes for latency.
const (
	DefaultBandwidthBytes      = 65536
	DefaultBandwidthIterations = 5000
	DefaultLatencyBytes        = 2
	DefaultLatencyIterations   = 1000
	DefaultPings               = 3
)

// WithDefaults fills the unset sizes.
func (t Test) WithDefaults() Test {
	switch t.Tool {
	case v1.ProbeToolBandwidth:
		if t.MessageBytes == 0 {
			t.MessageBytes = DefaultBandwidthBytes
		}
		if t.Iterations == 0 {
			t.Iterations = DefaultBandwidthIterations
		}
	case v1.ProbeToolLatency:
		if t.MessageBytes == 0 {
			t.MessageBytes = DefaultLatencyBytes
		}
		if t.Iterations == 0 {
			t.Iterations = DefaultLatencyIterations
		}
	case v1.ProbeToolReachability:
		if t.Count == 0 {
			t.Count = DefaultPings
		}
	}
	return t
}

// Validate names the field that is wrong.
func (t Test) Validate() error {
	switch {
	case !ValidTool(t.Tool):
		return fmt.Errorf("tool: %q is not ib_write_bw, ib_write_lat or rping", t.Tool)
	case !ValidFamily(t.Family):
		return fmt.Errorf("family: %q is not ipv4 or ipv6", t.Family)
	case t.MessageBytes < 0 || t.MessageBytes > MaxMessageBytes:
		return fmt.Errorf("message_bytes: %d is not in 0..%d", t.MessageBytes, MaxMessageBytes)
	case t.Iterations < 0 || t.Iterations > MaxIterations:
		return fmt.Errorf("iterations: %d is not in 0..%d", t.Iterations, MaxIterations)
	case t.Count < 0 || t.Count > MaxPings:
		return fmt.Errorf("count: %d is not in 0..%d", t.Count, MaxPings)
	case t.Tool == v1.ProbeToolReachability && (t.MessageBytes != 0 || t.Iterations != 0):
		return fmt.Errorf("message_bytes: rping takes a count, not a size or iterations")
	case t.Tool != v1.ProbeToolReachability && t.Count != 0:
		return fmt.Errorf("count: only rping takes a count")
	}
	return nil
}

// Binding is one side of a probe: the rail's RDMA device and port, the
// GID index of the rail address the test uses (found by value in the GID
// table), and that address.
type Binding struct {
	Device   string
	Port     int
	GIDIndex int
	Addr     netip.Addr
}

// ServerCommand is the one-shot server of a test, listening on port.
// perftest's out-of-band exchange listens on every address; rping binds
// the rail address.
func ServerCommand(t Test, b Binding, port int, tclass int) Command {
	t = t.WithDefaults()
	switch t.Tool {
	case v1.ProbeToolReachability:
		return Command{Name: t.Tool, Args: []string{"-s", "-a", b.Addr.String(), "-v", "-C", strconv.Itoa(t.Count), "-p", strconv.Itoa(port)}}
	default:
		return Command{Name: t.Tool, Args: perftestArgs(t, b, port, tclass)}
	}
}

// ClientCommand is the client of a test against a server at port.
// perftest's out-of-band exchange goes from this rail's IPv4 address
// (oobFrom) to the peer's (oob), whatever the GID family: Debian 12's
// perftest 4.5 speaks IPv4 only there. A perftest that can bind it
// (pf.BindSourceIP) gets --bind_source_ip, so the connection takes the
// rail's policy routing; an older one gets --source_ip, which it takes
// and ignores, and its exchange follows the main table. rping goes to
// the peer address of the family, from the rail address.
func ClientCommand(t Test, b Binding, peer, oobFrom, oob netip.Addr, port int, tclass int, pf Perftest) Command {
	t = t.WithDefaults()
	switch t.Tool {
	case v1.ProbeToolReachability:
		return Command{Name: t.Tool, Args: []string{"-c", "-I", b.Addr.String(), "-a", peer.String(), "-v", "-C", strconv.Itoa(t.Count), "-p", strconv.Itoa(port)}}
	default:
		args := perftestArgs(t, b, port, tclass)
		if oobFrom.IsValid() {
			flag := "--source_ip"
			if pf.BindSourceIP {
				flag = "--bind_source_ip"
			}
			args = append(args, flag, oobFrom.String())
		}
		return Command{Name: t.Tool, Args: append(args, oob.String())}
	}
}

func perftestArgs(t Test, b Binding, port, tclass int) []string {
	args := []string{"-d", b.Device, "-i", strconv.Itoa(b.Port), "-x", strconv.Itoa(b.GIDIndex),
		"-s", strconv.Itoa(t.MessageBytes), "-n", strconv.Itoa(t.Iterations), "-p", strconv.Itoa(port), "-F"}
	// No --report_gbits: perftest then prints MiB/s with two decimals,
	// a resolution of 10 KiB/s at any rate, where Gb/s with two decimals
	// is 4% of a slow link's bandwidth (parse.go converts).
	if tclass >= 0 {
		// The probe rides the RoCE priority like the workload does: the
		// GRH traffic class is the RoCE ToS (DSCP << 2 | ECN).
		args = append(args, "--tclass="+strconv.Itoa(tclass))
	}
	return args
}

// Expected is how long a test usually holds a NIC: the busy hint given to
// others while it runs (the timeout still bounds it).
func (t Test) Expected() time.Duration {
	switch t.Tool {
	case v1.ProbeToolBandwidth:
		return 10 * time.Second
	case v1.ProbeToolLatency:
		return 5 * time.Second
	}
	return 3 * time.Second
}
