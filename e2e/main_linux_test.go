package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/lab"
	"github.com/roce-agent/roce-agent/nic/nettest"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds roce-agent, roce-controller and roce-lab once per test
// binary.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "roce-e2e-bin-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", binDir+"/", "../cmd/roce-agent", "../cmd/roce-controller", "../cmd/roce-lab").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// startLab brings a lab up with its processes and waits until every
// agent converged; the lab is removed when the test ends.
func startLab(t *testing.T, prefix string, o lab.Options, po lab.ProcessOptions) (*lab.Fabric, *lab.Processes) {
	t.Helper()
	nettest.RequireRoot(t)
	nettest.RequireTools(t, "ip", "ping")
	bin := binaries(t)
	o.Prefix = prefix
	if o.WorkDir == "" {
		base := "/dev/shm"
		if _, err := os.Stat(base); err != nil {
			base = os.TempDir()
		}
		o.WorkDir = filepath.Join(base, "roce-e2e-"+prefix)
	}
	_ = lab.Cleanup(prefix)
	_ = lab.RemoveWorkDir(o.WorkDir)
	f, err := lab.Up(o)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	po.BinDir = bin
	if po.LogLevel == "" {
		po.LogLevel = "debug"
	}
	procs, err := f.Start(ctx, po)
	if err != nil {
		f.Down()
		t.Fatalf("start processes: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i := 0; i < f.Hosts(); i++ {
				t.Logf("log of %s:\n%s", f.Node(i), tailFile(procs.LogFile(f.Node(i)), 30))
			}
			t.Logf("log of the controller:\n%s", tailFile(procs.LogFile("controller"), 30))
		}
		if err := procs.Stop(); err != nil {
			t.Errorf("stop processes: %v", err)
		}
		if err := f.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	if err := procs.WaitConverged(ctx); err != nil {
		t.Fatalf("agents did not converge: %v", err)
	}
	return f, procs
}

func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// admin sends an admin request to the controller and decodes the answer.
func admin(t *testing.T, procs *lab.Processes, method, path string, body, out any) error {
	t.Helper()
	return adminAt(t, procs, procs.ControllerURL(), method, path, body, out)
}

// adminAt sends an admin request to one controller replica.
func adminAt(t *testing.T, procs *lab.Processes, base, method, path string, body, out any) error {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := procs.AdminClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// eventually polls cond every 100 ms until it returns "" or the limit
// passes; it returns the last reason.
func eventually(limit time.Duration, cond func() string) string {
	deadline := time.Now().Add(limit)
	for {
		why := cond()
		if why == "" || time.Now().After(deadline) {
			return why
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func condition(list []v1.Condition, typ v1.ConditionType) v1.Condition {
	for _, c := range list {
		if c.Type == typ {
			return c
		}
	}
	return v1.Condition{Type: typ, Status: "absent"}
}

// flapWatch records, in a host's namespace, every address change and
// every link going administratively down on the rails.
type flapWatch struct {
	mu     sync.Mutex
	events []string
	done   chan struct{}
	rails  map[string]bool
}

func watchFlaps(t *testing.T, f *lab.Fabric, host int) *flapWatch {
	t.Helper()
	ns, err := netns.GetFromName(f.HostNS(host))
	if err != nil {
		t.Fatal(err)
	}
	w := &flapWatch{done: make(chan struct{}), rails: map[string]bool{}}
	for _, n := range f.Netdevs(host) {
		w.rails[n] = true
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	index := map[int]string{}
	links, err := h.LinkList()
	h.Close()
	if err != nil {
		t.Fatal(err)
	}
	up := map[string]bool{}
	for _, l := range links {
		index[l.Attrs().Index] = l.Attrs().Name
		up[l.Attrs().Name] = l.Attrs().Flags&1 != 0
	}
	addrs := make(chan netlink.AddrUpdate, 256)
	linkc := make(chan netlink.LinkUpdate, 256)
	if err := netlink.AddrSubscribeWithOptions(addrs, w.done, netlink.AddrSubscribeOptions{Namespace: &ns}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSubscribeWithOptions(linkc, w.done, netlink.LinkSubscribeOptions{Namespace: &ns}); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer ns.Close()
		for {
			select {
			case <-w.done:
				return
			case u := <-addrs:
				if name := index[u.LinkIndex]; w.rails[name] && !u.LinkAddress.IP.IsLinkLocalUnicast() {
					verb := "removed"
					if u.NewAddr {
						verb = "added"
					}
					w.add(fmt.Sprintf("%s %s on %s", verb, u.LinkAddress.String(), name))
				}
			case u := <-linkc:
				name := u.Attrs().Name
				if !w.rails[name] {
					continue
				}
				isUp := u.IfInfomsg.Flags&unix.IFF_UP != 0
				if up[name] && !isUp {
					w.add("link " + name + " set down")
				}
				if u.Attrs().MTU != 0 && u.Attrs().MTU != 9000 {
					w.add(fmt.Sprintf("link %s mtu %d", name, u.Attrs().MTU))
				}
				up[name] = isUp
			}
		}
	}()
	return w
}

func (w *flapWatch) add(e string) {
	w.mu.Lock()
	w.events = append(w.events, e)
	w.mu.Unlock()
}

// Stop ends the watch and returns what it saw.
func (w *flapWatch) Stop() []string {
	close(w.done)
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.events...)
}

func contextTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// firstAddrEvent is closed at the first global address added on a host's
// rails.
func firstAddrEvent(t *testing.T, f *lab.Fabric, host int) <-chan struct{} {
	t.Helper()
	ns, err := netns.GetFromName(f.HostNS(host))
	if err != nil {
		t.Fatal(err)
	}
	updates := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	if err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{Namespace: &ns}); err != nil {
		t.Fatal(err)
	}
	out := make(chan struct{})
	go func() {
		defer ns.Close()
		defer close(done)
		for u := range updates {
			if u.NewAddr && !u.LinkAddress.IP.IsLinkLocalUnicast() {
				close(out)
				return
			}
		}
	}()
	return out
}
