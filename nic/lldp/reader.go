package lldp

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/probe"
)

// Where neighbours come from (the agent's lldp.source).
const (
	// SourceAuto asks lldpd (lldpctl) and listens for frames itself when
	// lldpctl is not installed or lldpd does not answer.
	SourceAuto    = "auto"
	SourceLldpctl = "lldpctl"
	SourceListen  = "listen"
	SourceOff     = "off"
)

// Sources lists the valid sources.
var Sources = []string{SourceAuto, SourceLldpctl, SourceListen, SourceOff}

// ErrLldpdDown says lldpctl could not reach lldpd (not running, or its
// socket is elsewhere: lldp.socket).
var ErrLldpdDown = errors.New("lldpd does not answer")

// Result is one netdev's neighbour, or why there is none (an error
// wrapping ErrNoNeighbor when there is simply none).
type Result struct {
	Neighbor *Neighbor
	Err      error
}

// Reader reads the rails' LLDP neighbours: from lldpd through lldpctl
// (the probe runner), or by listening on each rail itself. In listen
// mode it keeps a listener per netdev running between reads, caching the
// neighbours each heard until their TTL passes; Close stops them.
type Reader struct {
	// Runner runs lldpctl (nil: probe.ExecRunner{}).
	Runner probe.Runner
	// Socket is lldpd's control socket (lldpctl -u); "" is lldpd's
	// default.
	Socket string
	// Source is SourceAuto ("" too), SourceLldpctl or SourceListen.
	Source string
	// Timeout bounds one lldpctl run (default 10s).
	Timeout time.Duration
	// Do runs fn in the rails' network namespace, where listening sockets
	// are opened (nil: here).
	Do func(fn func() error) error
	// Retry is how long a listener that failed (no such interface, no
	// CAP_NET_RAW) waits before it tries again (default 30s).
	Retry time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time

	mu       sync.Mutex
	watchers map[string]*watcher
}

// Read returns every netdev's neighbour, and the source that gave them
// (SourceLldpctl or SourceListen). In auto mode lldpctl is asked first;
// when it is not installed or lldpd does not answer, the rails are
// listened on (a listener just started has heard nothing yet: its
// neighbours show from a later read, within the leaf's LLDP transmit
// interval).
func (r *Reader) Read(ctx context.Context, netdevs []string) (map[string]Result, string) {
	out := make(map[string]Result, len(netdevs))
	src := r.Source
	if src == "" {
		src = SourceAuto
	}
	if src == SourceAuto || src == SourceLldpctl {
		got, err := r.lldpctl(ctx)
		if err == nil || src == SourceLldpctl || !(errors.Is(err, probe.ErrToolMissing) || errors.Is(err, ErrLldpdDown)) {
			if src == SourceAuto {
				r.stopWatchers(nil)
			}
			now := r.now()
			for _, dev := range netdevs {
				switch n, ok := got[dev]; {
				case err != nil:
					out[dev] = Result{Err: err}
				case !ok:
					out[dev] = Result{Err: fmt.Errorf("lldpd knows %w on %s", ErrNoNeighbor, dev)}
				default:
					n.Seen = now
					for i := range n.Others {
						n.Others[i].Seen = now
					}
					out[dev] = Result{Neighbor: &n}
				}
			}
			return out, SourceLldpctl
		}
	}
	keep := map[string]bool{}
	for _, dev := range netdevs {
		keep[dev] = true
	}
	r.stopWatchers(keep)
	now := r.now()
	for _, dev := range netdevs {
		out[dev] = r.watcher(dev).result(dev, now)
	}
	return out, SourceListen
}

// Close stops the listeners.
func (r *Reader) Close() { r.stopWatchers(nil) }

func (r *Reader) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// lldpctl runs `lldpctl [-u socket] -f json` and parses it.
func (r *Reader) lldpctl(ctx context.Context) (map[string]Neighbor, error) {
	runner := r.Runner
	if runner == nil {
		runner = probe.ExecRunner{}
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	var args []string
	if r.Socket != "" {
		args = append(args, "-u", r.Socket)
	}
	args = append(args, "-f", "json")
	out, err := probe.Run(ctx, runner, probe.Command{Name: "lldpctl", Args: args, Timeout: timeout})
	switch {
	case err != nil:
		return nil, fmt.Errorf("lldpctl: %w", err)
	case out.TimedOut:
		return nil, fmt.Errorf("lldpctl: no answer in %s", timeout)
	case out.ExitCode != 0:
		msg := lastLine(out.Stderr)
		if strings.Contains(out.Stderr, "unable to connect") {
			return nil, fmt.Errorf("lldpctl: %w: %s", ErrLldpdDown, msg)
		}
		return nil, fmt.Errorf("lldpctl: exit %d: %s", out.ExitCode, msg)
	}
	return ParseLldpctlJSON([]byte(out.Stdout))
}

// lastLine is a tool's last non-empty line, clipped: what it says went
// wrong.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > 200 {
		l = l[:200] + "..."
	}
	if l == "" {
		return "no message"
	}
	return text(l)
}

// watcher listens on one netdev and keeps what it heard, per neighbour
// (chassis and port), until the TTL passes.
type watcher struct {
	cancel context.CancelFunc
	done   chan struct{}
	since  time.Time

	mu    sync.Mutex
	heard map[string]Neighbor
	err   error
}

func (r *Reader) watcher(dev string) *watcher {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.watchers[dev]; w != nil {
		return w
	}
	if r.watchers == nil {
		r.watchers = map[string]*watcher{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{cancel: cancel, done: make(chan struct{}), since: r.now(), heard: map[string]Neighbor{}}
	r.watchers[dev] = w
	go r.listen(ctx, dev, w)
	return w
}

// stopWatchers stops the listeners of netdevs not in keep (nil: all) and
// waits for them.
func (r *Reader) stopWatchers(keep map[string]bool) {
	r.mu.Lock()
	var stopped []*watcher
	for dev, w := range r.watchers {
		if !keep[dev] {
			w.cancel()
			stopped = append(stopped, w)
			delete(r.watchers, dev)
		}
	}
	r.mu.Unlock()
	for _, w := range stopped {
		<-w.done
	}
}

func (r *Reader) listen(ctx context.Context, dev string, w *watcher) {
	defer close(w.done)
	retry := r.Retry
	if retry <= 0 {
		retry = 30 * time.Second
	}
	for {
		var s *Socket
		err := r.do(func() (err error) { s, err = OpenSocket(dev); return err })
		if err == nil {
			w.setErr(nil)
			for {
				n, e := s.Next(ctx, time.Time{})
				if e != nil {
					err = e
					break
				}
				n.Seen = r.now()
				w.hear(n)
			}
			_ = s.Close()
		}
		if ctx.Err() != nil {
			return
		}
		w.setErr(err)
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (r *Reader) do(fn func() error) error {
	if r.Do != nil {
		return r.Do(fn)
	}
	return fn()
}

func (w *watcher) setErr(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

// hear records an LLDPDU: a TTL 0 one forgets its neighbour.
func (w *watcher) hear(n Neighbor) {
	k := n.ChassisID + "\x00" + n.PortID
	w.mu.Lock()
	defer w.mu.Unlock()
	if n.TTL == 0 {
		delete(w.heard, k)
		return
	}
	w.heard[k] = n
}

// result is the netdev's neighbours whose TTL has not passed, the latest
// first (the others in Others), or why there are none.
func (w *watcher) result(dev string, now time.Time) Result {
	w.mu.Lock()
	defer w.mu.Unlock()
	var live []Neighbor
	expired := ""
	for k, n := range w.heard {
		if now.Before(n.Seen.Add(n.TTL)) {
			live = append(live, n)
			continue
		}
		expired = n.String()
		delete(w.heard, k)
	}
	switch {
	case len(live) > 0:
		sort.Slice(live, func(i, j int) bool { return live[i].Seen.After(live[j].Seen) })
		n := live[0]
		n.Others = append([]Neighbor(nil), live[1:]...)
		n.Source = v1.LLDPSourceFrame
		return Result{Neighbor: &n}
	case w.err != nil:
		return Result{Err: w.err}
	case expired != "":
		return Result{Err: fmt.Errorf("%w on %s: the last LLDPDU (from %s) is older than its TTL", ErrNoNeighbor, dev, expired)}
	}
	return Result{Err: fmt.Errorf("%w on %s: no LLDPDU in the %s since listening began", ErrNoNeighbor, dev, now.Sub(w.since).Round(time.Second))}
}
