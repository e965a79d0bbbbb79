package lldp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roce-agent/roce-agent/nic/nettest"
	"github.com/roce-agent/roce-agent/probe"
)

// fakeRunner plays lldpctl: out (or err), recording the commands.
type fakeRunner struct {
	mu   sync.Mutex
	out  probe.Output
	err  error
	cmds []probe.Command
}

type doneProcess probe.Output

func (p doneProcess) Wait() (probe.Output, error) { return probe.Output(p), nil }

func (f *fakeRunner) Start(_ context.Context, c probe.Command) (probe.Process, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, c)
	if f.err != nil {
		return nil, f.err
	}
	return doneProcess(f.out), nil
}

func lldpctlOutput(t *testing.T, file string) probe.Output {
	return probe.Output{Stdout: string(readFixture(t, file))}
}

func TestReaderLldpctl(t *testing.T) {
	now := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	f := &fakeRunner{out: lldpctlOutput(t, "lldpctl-several.json")}
	r := &Reader{Runner: f, Socket: "/run/lldpd-test.socket", Now: func() time.Time { return now }}
	got, src := r.Read(context.Background(), []string{"rail0", "rail2", "rail9"})
	if src != SourceLldpctl {
		t.Errorf("source %s", src)
	}
	if n := got["rail0"].Neighbor; n == nil || n.String() != "leaf0 port swp1" || !n.Seen.Equal(now) || n.Source != "lldpctl" {
		t.Errorf("rail0: %+v", got["rail0"])
	}
	if n := got["rail2"].Neighbor; n == nil || n.String() != "leaf1 port swp1" {
		t.Errorf("rail2: %+v", got["rail2"])
	}
	if e := got["rail9"].Err; !errors.Is(e, ErrNoNeighbor) || e.Error() != "lldpd knows no LLDP neighbour on rail9" {
		t.Errorf("rail9: %+v", got["rail9"])
	}
	if c := f.cmds[0]; c.Name != "lldpctl" || !slices.Equal(c.Args, []string{"-u", "/run/lldpd-test.socket", "-f", "json"}) || c.Timeout != 10*time.Second {
		t.Errorf("ran %+v", c)
	}

	// lldpctl mode reports lldpctl's failure on every rail.
	for _, tc := range []struct {
		out  probe.Output
		err  error
		want string
	}{
		{probe.Output{ExitCode: 1, Stderr: "2025-01-01T00:00:00 [WARN/control] unable to connect to socket /run/lldpd.socket: No such file or directory\n"}, nil, "lldpctl: lldpd does not answer: 2025-01-01T00:00:00 [WARN/control] unable to connect"},
		{probe.Output{ExitCode: 3, Stderr: "boom\n"}, nil, "lldpctl: exit 3: boom"},
		{probe.Output{TimedOut: true, ExitCode: -1}, nil, "lldpctl: no answer in 10s"},
		{probe.Output{Stdout: "not json"}, nil, "lldpctl json:"},
		{probe.Output{}, fmt.Errorf("lldpctl: %w", probe.ErrToolMissing), "not installed"},
	} {
		r := &Reader{Runner: &fakeRunner{out: tc.out, err: tc.err}, Source: SourceLldpctl}
		got, src := r.Read(context.Background(), []string{"rail0"})
		if e := got["rail0"].Err; e == nil || !strings.Contains(e.Error(), tc.want) || src != SourceLldpctl {
			t.Errorf("%+v: %v (%s), want %q", tc.out, e, src, tc.want)
		}
	}
}

// In auto mode a missing lldpctl, or an lldpd that does not answer,
// falls back to listening; other lldpctl failures are reported.
func TestReaderAutoFallsBack(t *testing.T) {
	opened := make(chan string, 10)
	fail := errors.New("no such interface")
	for _, f := range []*fakeRunner{
		{err: fmt.Errorf("lldpctl: %w", probe.ErrToolMissing)},
		{out: probe.Output{ExitCode: 1, Stderr: "unable to connect to socket /run/lldpd.socket"}},
	} {
		r := &Reader{Runner: f, Retry: time.Hour, Do: func(fn func() error) error { opened <- "x"; return fail }}
		got, src := r.Read(context.Background(), []string{"rail0", "rail1"})
		if src != SourceListen {
			t.Errorf("source %s", src)
		}
		<-opened
		<-opened
		// The listeners failed: the next read says why.
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			got, _ = r.Read(context.Background(), []string{"rail0", "rail1"})
			if errors.Is(got["rail0"].Err, fail) && errors.Is(got["rail1"].Err, fail) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !errors.Is(got["rail0"].Err, fail) {
			t.Errorf("rail0: %+v", got["rail0"])
		}
		// A rail that goes away loses its listener.
		r.Read(context.Background(), []string{"rail0"})
		r.mu.Lock()
		n := len(r.watchers)
		r.mu.Unlock()
		if n != 1 {
			t.Errorf("%d listeners, want 1", n)
		}
		r.Close()
	}
	r := &Reader{Runner: &fakeRunner{out: probe.Output{ExitCode: 2, Stderr: "bad"}}}
	got, src := r.Read(context.Background(), []string{"rail0"})
	if src != SourceLldpctl || got["rail0"].Err == nil {
		t.Errorf("%s %+v", src, got)
	}
}

// The watcher's cache: neighbours expire by TTL, a TTL 0 LLDPDU forgets
// its neighbour, several live ones are reported as Others.
func TestWatcherCache(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	w := &watcher{since: t0, heard: map[string]Neighbor{}}
	if res := w.result("rail0", t0.Add(31*time.Second)); !errors.Is(res.Err, ErrNoNeighbor) || !strings.Contains(res.Err.Error(), "no LLDPDU in the 31s since listening began") {
		t.Errorf("nothing heard: %+v", res)
	}
	a := Neighbor{ChassisID: "c0", SysName: "leaf0", PortID: "swp1", TTL: 120 * time.Second, Seen: t0}
	b := Neighbor{ChassisID: "c9", SysName: "leaf9", PortID: "Ethernet7", TTL: 10 * time.Second, Seen: t0.Add(time.Second)}
	w.hear(a)
	w.hear(b)
	if res := w.result("rail0", t0.Add(5*time.Second)); res.Neighbor == nil || res.Neighbor.SysName != "leaf9" || len(res.Neighbor.Others) != 1 || res.Neighbor.Source != "frame" {
		t.Errorf("two heard: %+v", res)
	}
	if res := w.result("rail0", t0.Add(20*time.Second)); res.Neighbor == nil || res.Neighbor.SysName != "leaf0" || len(res.Neighbor.Others) != 0 {
		t.Errorf("one expired: %+v", res)
	}
	if res := w.result("rail0", t0.Add(121*time.Second)); !errors.Is(res.Err, ErrNoNeighbor) || !strings.Contains(res.Err.Error(), "leaf0 port swp1) is older than its TTL") {
		t.Errorf("all expired: %+v", res)
	}
	w.hear(a)
	a.TTL = 0
	w.hear(a)
	if res := w.result("rail0", t0.Add(time.Second)); res.Neighbor != nil {
		t.Errorf("shutdown kept: %+v", res)
	}
}

// Listen mode end to end: a listener per rail in a namespace (Do enters
// it), the neighbour cached between reads.
func TestReaderListenNetns(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 1)
	l, err := lab.Host.NL.LinkByName("rail0")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Host.NL.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	frame, err := EncodeFrame(net.HardwareAddr{2, 0, 0, 0, 0, 0x20}, Neighbor{ChassisID: "0c:42:a1:00:00:20", SysName: "leaf3", PortID: "swp12", TTL: 120 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	stop := sender(t, lab.Leaf, "leaf0", frame)
	defer stop()
	r := &Reader{Source: SourceListen, Do: func(fn func() error) error {
		var err error
		inNS(t, lab.Host, func() { err = fn() })
		return err
	}}
	defer r.Close()
	deadline := time.Now().Add(10 * time.Second)
	var got map[string]Result
	for time.Now().Before(deadline) {
		got, _ = r.Read(context.Background(), []string{"rail0"})
		if got["rail0"].Neighbor != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := got["rail0"].Neighbor; n == nil || n.String() != "leaf3 port swp12" || n.Source != "frame" {
		t.Fatalf("rail0: %+v", got["rail0"])
	}
}
