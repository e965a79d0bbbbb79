package diag

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/gpu/topology"
	"github.com/roce-agent/roce-agent/nic/linkengine/linktest"
	"github.com/roce-agent/roce-agent/nic/sysfstest"
	"github.com/roce-agent/roce-agent/probe"
	"github.com/roce-agent/roce-agent/qos"
)

// sampling is the DGX fixture with fault, whose wait between two counter
// samples runs during on the tree instead of sleeping: the counters it
// writes are the second sample's.
func sampling(t *testing.T, fault, during func(*sysfstest.Tree)) *Env {
	t.Helper()
	var tree *sysfstest.Tree
	e := dgx(t, func(tr *sysfstest.Tree) {
		tree = tr
		if fault != nil {
			fault(tr)
		}
	})
	e.Sleep = func(ctx context.Context, _ time.Duration) error {
		if during != nil {
			during(tree)
			if err := tree.Err(); err != nil {
				t.Error(err)
			}
		}
		return ctx.Err()
	}
	return e
}

// dgxCounter is the sysfs path of a counter of rail's compute NIC: dir is
// "counters" (PMA) or "hw_counters".
func dgxCounter(rail int, dir, name string) string {
	return "/class/infiniband/" + sysfstest.DGXRDMADevice(rail) + "/ports/1/" + dir + "/" + name
}

// softRoCE is the soft-RoCE fixture with rxe0's netdev pinned to rail 0,
// sampled like sampling.
func softRoCE(t *testing.T, during func(*sysfstest.Tree)) *Env {
	t.Helper()
	var tree *sysfstest.Tree
	e := fixture(t, sysfstest.SoftRoCE, func(tr *sysfstest.Tree) { tree = tr }, nil)
	e.Inventory, e.InventoryErr = agent.DiscoverInventory(agent.InventoryOptions{Node: "lab-1", FS: e.FS, Pins: []topology.RailPin{{Rail: 0, Netdev: "vethA"}}})
	if e.InventoryErr != nil || len(e.Rails()) != 1 {
		t.Fatalf("soft-roce inventory: %v, rails %+v", e.InventoryErr, e.Rails())
	}
	e.Sleep = func(ctx context.Context, _ time.Duration) error {
		if during != nil {
			during(tree)
		}
		return ctx.Err()
	}
	return e
}

func TestCNTLinkErrors(t *testing.T) {
	all(t, check(t, sampling(t, nil, nil), "CNT-LINK-001"), Pass)

	rs := check(t, sampling(t, func(tr *sysfstest.Tree) {
		// Rail 0: old errors, not moving.
		tr.WriteFile(dgxCounter(0, "counters", "symbol_error"), "40")
		tr.WriteFile(dgxCounter(0, "counters", "link_downed"), "2")
		// Rail 3: a counter about to wrap at 2^32.
		tr.WriteFile(dgxCounter(3, "counters", "port_xmit_discards"), "4294967290")
		// Rail 4: garbage.
		tr.WriteFile(dgxCounter(4, "counters", "symbol_error"), "\x00\xffgarbage")
	}, func(tr *sysfstest.Tree) {
		tr.WriteFile(dgxCounter(1, "counters", "symbol_error"), "12")
		tr.WriteFile(dgxCounter(1, "counters", "port_rcv_errors"), "3")
		tr.WriteFile(dgxCounter(2, "counters", "port_rcv_errors"), "3")
		tr.WriteFile(dgxCounter(3, "counters", "port_xmit_discards"), "5")
	}), "CNT-LINK-001")
	r := want(t, rs, sysfstest.DGXNetdev(0), Pass, "symbol_error 40", "link_downed 2", "historic")
	if r.Rail == nil || *r.Rail != 0 {
		t.Errorf("rail 0's result is on rail %v", r.Rail)
	}
	want(t, rs, sysfstest.DGXNetdev(1), Fail, "symbol_error +12", "port_rcv_errors +3", "in 1ms", "bit errors")
	want(t, rs, sysfstest.DGXNetdev(2), Warn, "port_rcv_errors +3")
	want(t, rs, sysfstest.DGXNetdev(3), Warn, "port_xmit_discards +11")
	want(t, rs, sysfstest.DGXNetdev(4), Unknown, "not a counter")
	want(t, rs, sysfstest.DGXNetdev(5), Pass, "7 counters at 0")

	// rxe has no PMA counters.
	all(t, check(t, softRoCE(t, nil), "CNT-LINK-001"), Skip)
	want(t, check(t, softRoCE(t, nil), "CNT-LINK-001"), "vethA", Skip, "no PMA counters")

	// A port whose counters/ has none of the error counters.
	rs = check(t, sampling(t, func(tr *sysfstest.Tree) {
		for _, n := range linkCounters {
			tr.Remove(dgxCounter(6, "counters", n))
		}
	}, nil), "CNT-LINK-001")
	want(t, rs, sysfstest.DGXNetdev(6), Skip, "none of symbol_error")
}

func TestCNTLinkErrorsCounterVanishes(t *testing.T) {
	rs := check(t, sampling(t, nil, func(tr *sysfstest.Tree) {
		tr.Remove(dgxCounter(2, "counters", "link_downed"))
	}), "CNT-LINK-001")
	want(t, rs, sysfstest.DGXNetdev(2), Unknown, "link_downed vanished")
}

func TestCNTSamplingInterrupted(t *testing.T) {
	e := dgx(t, nil)
	e.Sleep = func(context.Context, time.Duration) error { return context.Canceled }
	for _, id := range []string{"CNT-LINK-001", "CNT-ROCE-001"} {
		rs := check(t, e, id)
		all(t, rs, Unknown)
		want(t, rs, sysfstest.DGXNetdev(0), Unknown, "sampling interrupted")
	}
}

// TestCNTSampleWindowFitsTimeout: a --sample longer than the check's
// timeout is shortened to end before it.
func TestCNTSampleWindowFitsTimeout(t *testing.T) {
	e := &Env{Sample: time.Minute}
	ctx, cancel := context.WithTimeout(context.Background(), counterTimeout)
	defer cancel()
	if w := sampleWindow(ctx, e); w > counterTimeout-sampleMargin || w < counterTimeout-sampleMargin-time.Second {
		t.Errorf("window %s with a %s timeout", w, counterTimeout)
	}
	if w := sampleWindow(context.Background(), &Env{}); w != 3*time.Second {
		t.Errorf("default window %s", w)
	}
}

func TestCNTCounterDelta(t *testing.T) {
	for _, tc := range []struct{ before, after, want uint64 }{
		{0, 0, 0}, {5, 17, 12},
		{4294967290, 5, 11}, // a 32-bit counter wrapped
		{1 << 40, 7, 7},     // a 64-bit counter reset
		{4294967295, 4294967295, 0},
	} {
		if got := counterDelta(tc.before, tc.after); got != tc.want {
			t.Errorf("counterDelta(%d, %d) = %d, want %d", tc.before, tc.after, got, tc.want)
		}
	}
}

func TestCNTRoCEErrors(t *testing.T) {
	all(t, check(t, sampling(t, nil, nil), "CNT-ROCE-001"), Pass)

	rs := check(t, sampling(t, func(tr *sysfstest.Tree) {
		tr.WriteFile(dgxCounter(0, "hw_counters", "out_of_sequence"), "1000")
		tr.WriteFile(dgxCounter(3, "hw_counters", "packet_seq_err"), "4294967295")
		// roce_accl counters, which the fixture's firmware lacks.
		tr.WriteFile(dgxCounter(1, "hw_counters", "roce_adp_retrans"), "0")
	}, func(tr *sysfstest.Tree) {
		tr.WriteFile(dgxCounter(1, "hw_counters", "out_of_sequence"), "5")
		tr.WriteFile(dgxCounter(1, "hw_counters", "roce_adp_retrans"), "9")
		tr.WriteFile(dgxCounter(2, "hw_counters", "local_ack_timeout_err"), "2")
		tr.WriteFile(dgxCounter(2, "hw_counters", "out_of_sequence"), "1")
		tr.WriteFile(dgxCounter(3, "hw_counters", "packet_seq_err"), "3")
		// Congestion counters moving are not errors.
		tr.WriteFile(dgxCounter(4, "hw_counters", "np_cnp_sent"), "500")
	}), "CNT-ROCE-001")
	want(t, rs, sysfstest.DGXNetdev(0), Pass, "out_of_sequence 1000", "historic")
	want(t, rs, sysfstest.DGXNetdev(1), Warn, "out_of_sequence +5", "roce_adp_retrans +9", "PFC not lossless")
	want(t, rs, sysfstest.DGXNetdev(2), Fail, "local_ack_timeout_err +2", "out_of_sequence +1", "timeouts")
	want(t, rs, sysfstest.DGXNetdev(3), Warn, "packet_seq_err +4")
	want(t, rs, sysfstest.DGXNetdev(4), Pass)

	// No hw_counters directory.
	rs = check(t, sampling(t, func(tr *sysfstest.Tree) {
		tr.Remove("/class/infiniband/" + sysfstest.DGXRDMADevice(5) + "/ports/1/hw_counters")
	}, nil), "CNT-ROCE-001")
	want(t, rs, sysfstest.DGXNetdev(5), Skip, "hw_counters")

	// rxe: its own names.
	rs = check(t, softRoCE(t, func(tr *sysfstest.Tree) {
		tr.WriteFile("/class/infiniband/rxe0/ports/1/hw_counters/retry_exceeded_err", "1")
		tr.WriteFile("/class/infiniband/rxe0/ports/1/hw_counters/rcvd_seq_err", "4")
	}), "CNT-ROCE-001")
	want(t, rs, "vethA", Fail, "retry_exceeded_err +1", "rcvd_seq_err +4")
}

// pfcCountersDCB is a dcbnl client whose PFC counters come from a function of
// the device and how many times it was asked; it refuses writes.
type pfcCountersDCB struct {
	t     *testing.T
	mu    sync.Mutex
	calls map[string]int
	ieee  func(dev string, call int) (qos.IEEE, error)
}

func (f *pfcCountersDCB) IEEE(dev string) (qos.IEEE, error) {
	f.mu.Lock()
	n := f.calls[dev]
	f.calls[dev]++
	f.mu.Unlock()
	return f.ieee(dev, n)
}

func (f *pfcCountersDCB) SetIEEE(dev string, _ qos.IEEE) error {
	f.t.Errorf("diag wrote dcbnl on %s", dev)
	return errors.New("read-only")
}

func (f *pfcCountersDCB) DelApps(dev string, _ []qos.App) error {
	f.t.Errorf("diag wrote dcbnl on %s", dev)
	return errors.New("read-only")
}

func (f *pfcCountersDCB) DCBX(string) (uint8, error) { return 0, qos.ErrUnsupported }

func (f *pfcCountersDCB) SetDCBX(dev string, _ uint8) error {
	f.t.Errorf("diag wrote dcbnl on %s", dev)
	return errors.New("read-only")
}

// withPFCCounters gives e a node whose dcbnl client answers with ieee, and a 3 s
// window (the wait is faked: nothing sleeps).
func withPFCCounters(t *testing.T, e *Env, ieee func(dev string, call int) (qos.IEEE, error)) *pfcCountersDCB {
	t.Helper()
	f := &pfcCountersDCB{t: t, calls: map[string]int{}, ieee: ieee}
	node, err := agent.OpenNode(agent.NodeOptions{Config: e.Config, Host: linktest.New(), DCB: f})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	e.Node = node
	e.Sample = 3 * time.Second
	e.Sleep = func(ctx context.Context, _ time.Duration) error { return ctx.Err() }
	return f
}

// pfcState is a PFC state with PFC on priority 3 and pause counts on it.
func pfcState(tx, rx uint64) qos.IEEE {
	p := &qos.PFC{Cap: 8, Enable: 1 << 3}
	p.Requests[3], p.Indications[3] = tx, rx
	return qos.IEEE{PFC: p}
}

func TestCNTPFCStorm(t *testing.T) {
	// No access to the namespace: SKIP with the reason.
	e := dgx(t, nil)
	e.NodeErr = errors.New("diag reads a sysfs tree, not the live host")
	want(t, check(t, e, "CNT-PFC-001"), "node", Skip, "not the live host")

	e = dgx(t, nil)
	f := withPFCCounters(t, e, func(dev string, call int) (qos.IEEE, error) {
		k := uint64(call) // 0 before the window, 1..5 after each step
		switch dev {
		case sysfstest.DGXNetdev(0): // sends pauses without a break: 5000 in 3 s
			return pfcState(10+k*1000, 0), nil
		case sysfstest.DGXNetdev(1): // one burst: 6000 in the last step
			if call == pfcSteps {
				return pfcState(6000, 0), nil
			}
			return pfcState(0, 0), nil
		case sysfstest.DGXNetdev(2): // paused by the leaf
			return pfcState(0, k*2000), nil
		case sysfstest.DGXNetdev(3): // some pauses, no storm
			return pfcState(k*10, k*30), nil
		case sysfstest.DGXNetdev(4):
			return qos.IEEE{}, qos.ErrUnsupported
		case sysfstest.DGXNetdev(5):
			return qos.IEEE{}, errors.New("netlink: message truncated")
		case sysfstest.DGXNetdev(6):
			return qos.IEEE{}, nil // no getpfc
		}
		return pfcState(0, 0), nil
	})
	rs := check(t, e, "CNT-PFC-001")
	want(t, rs, sysfstest.DGXNetdev(0), Fail, "prio 3: tx 1667/s", "without a break", "below 1000")
	want(t, rs, sysfstest.DGXNetdev(1), Warn, "prio 3: tx 2000/s", "storm rate")
	want(t, rs, sysfstest.DGXNetdev(2), Warn, "rx 3333/s", "leaf pauses")
	want(t, rs, sysfstest.DGXNetdev(3), Pass, "tx 17/s, rx 50/s", "priority 3")
	want(t, rs, sysfstest.DGXNetdev(4), Skip, "no dcbnl")
	want(t, rs, sysfstest.DGXNetdev(5), Unknown, "truncated")
	want(t, rs, sysfstest.DGXNetdev(6), Skip, "no PFC state")
	want(t, rs, sysfstest.DGXNetdev(7), Pass, "no pause frames in 3s")
	if n := f.calls[sysfstest.DGXNetdev(0)]; n != pfcSteps+1 {
		t.Errorf("%d dcbnl reads of a storming NIC, want %d", n, pfcSteps+1)
	}
}

// stallRunner answers `ethtool -S DEV` with mlx5-style statistics whose
// stall prevention counters come from a function of the device and the
// call; other tools are not installed.
type stallRunner struct {
	mu    sync.Mutex
	calls map[string]int
	stats func(dev string, call int) (warning, errors uint64, ok bool)
}

func (r *stallRunner) Start(_ context.Context, c probe.Command) (probe.Process, error) {
	if c.Name != "ethtool" || len(c.Args) != 2 || c.Args[0] != "-S" {
		return nil, probe.ErrToolMissing
	}
	dev := c.Args[1]
	r.mu.Lock()
	n := r.calls[dev]
	r.calls[dev]++
	r.mu.Unlock()
	w, e, ok := r.stats(dev, n)
	if !ok {
		return doneProcess(probe.Output{Stderr: "no stats available\n", ExitCode: 94}), nil
	}
	// the warning counter's name ends in a space, as in some mlx5 versions
	out := fmt.Sprintf("NIC statistics:\n     rx_packets: 1234\n     tx_prio3_pause: 0\n     tx_pause_storm_warning_events : %d\n     tx_pause_storm_error_events: %d\n     garbage line\n     rx_bad: -1\n", w, e)
	return doneProcess(probe.Output{Stdout: out}), nil
}

func TestCNTPFCStallPrevention(t *testing.T) {
	e := dgx(t, nil)
	withPFCCounters(t, e, func(string, int) (qos.IEEE, error) { return pfcState(0, 0), nil })
	e.Runner = &stallRunner{calls: map[string]int{}, stats: func(dev string, call int) (uint64, uint64, bool) {
		k := uint64(call)
		switch dev {
		case sysfstest.DGXNetdev(0): // stall prevention fired in the window
			return 3 + k, 1 + k/uint64(pfcSteps), true
		case sysfstest.DGXNetdev(1): // warnings only
			return 7 + k, 0, true
		case sysfstest.DGXNetdev(2): // history only
			return 12, 2, true
		case sysfstest.DGXNetdev(3): // not an mlx5 with stall detection
			return 0, 0, false
		}
		return 0, 0, true
	}}
	rs := check(t, e, "CNT-PFC-001")
	want(t, rs, sysfstest.DGXNetdev(0), Fail, "stall prevention: 5 warning and 1 error events", "pfc-prevention-tout 1 times")
	want(t, rs, sysfstest.DGXNetdev(1), Warn, "stall prevention: 5 warning and 0 error events", "storm warning threshold 5 times")
	want(t, rs, sysfstest.DGXNetdev(2), Pass, "no pause frames in 3s", "since the driver loaded: 12 warning, 2 error, none in the window")
	want(t, rs, sysfstest.DGXNetdev(3), Pass, "no pause frames in 3s")
	want(t, rs, sysfstest.DGXNetdev(4), Pass, "no pause frames in 3s")
}

func TestParseEthtoolStats(t *testing.T) {
	m := parseEthtoolStats("NIC statistics:\n     rx_packets: 12\n     tx_pause_storm_warning_events : 3\n  bad: x\n: 4\nnoise\n big: 18446744073709551615\n")
	want := map[string]uint64{"rx_packets": 12, "tx_pause_storm_warning_events": 3, "big": 18446744073709551615}
	if len(m) != len(want) {
		t.Fatalf("parsed %v, want %v", m, want)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %d, want %d", k, m[k], v)
		}
	}
}

func FuzzParseEthtoolStats(f *testing.F) {
	f.Add("NIC statistics:\n     rx_packets: 12\n     tx_pause_storm_warning_events : 3\n")
	f.Add(": :\n::1\n x : 99999999999999999999\n")
	f.Fuzz(func(t *testing.T, out string) {
		for name := range parseEthtoolStats(out) {
			if name == "" || name != strings.TrimSpace(name) || strings.Contains(name, "\n") {
				t.Fatalf("name %q from %q", name, out)
			}
		}
	})
}
