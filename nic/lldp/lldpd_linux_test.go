package lldp

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/roce-agent/roce-agent/nic/nettest"
	"github.com/roce-agent/roce-agent/probe"
)

// startLldpd runs lldpd in ns on iface, in the foreground, with its own
// control socket, system name and a 1s transmit interval; it is stopped
// when the test ends.
func startLldpd(t *testing.T, ns *nettest.NS, dir, name, iface string) string {
	t.Helper()
	sock := filepath.Join(dir, name+".sock")
	empty := filepath.Join(dir, "empty.conf")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "lldpd", "-d", "-u", sock, "-I", iface, "-O", empty)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("lldpcli", "-u", sock, "configure", "system", "hostname", name).CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lldpcli: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := exec.Command("lldpcli", "-u", sock, "configure", "lldp", "tx-interval", "1").CombinedOutput(); err != nil {
		t.Fatalf("lldpcli: %v\n%s", err, out)
	}
	return sock
}

// Against the real lldpd: a leaf namespace and a host namespace joined by
// a veth, lldpd in both. The Reader reads the leaf through lldpctl, and,
// listening, from the leaf's own LLDPDUs.
func TestReaderRealLldpd(t *testing.T) {
	nettest.RequireRoot(t)
	nettest.RequireTools(t, "lldpd", "lldpcli", "lldpctl")
	lab := nettest.NewLab(t, 1)
	l, err := lab.Host.NL.LinkByName("rail0")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Host.NL.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "lldpd-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // lldpd drops to _lldpd
		t.Fatal(err)
	}
	lab.Leaf.MustExec(t, "ip", "link", "set", "leaf0", "alias", "gpu-00 rail0")
	startLldpd(t, lab.Leaf, dir, "leaf-x", "leaf0")
	hostSock := startLldpd(t, lab.Host, dir, "host-x", "rail0")

	r := &Reader{Runner: probe.ExecRunner{}, Socket: hostSock, Source: SourceLldpctl}
	var got map[string]Result
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		got, _ = r.Read(context.Background(), []string{"rail0"})
		if got["rail0"].Neighbor != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	n := got["rail0"].Neighbor
	if n == nil || n.SysName != "leaf-x" || n.PortID != "leaf0" || n.PortDescr != "gpu-00 rail0" || n.Source != "lldpctl" {
		t.Fatalf("lldpctl: %+v", got["rail0"])
	}

	var fr Neighbor
	inNS(t, lab.Host, func() { fr, err = Listen(context.Background(), "rail0", 10*time.Second) })
	if err != nil || fr.ChassisID != n.ChassisID || fr.PortID != n.PortID || fr.SysName != n.SysName || fr.PortDescr != n.PortDescr {
		t.Errorf("listened %+v (%v), lldpctl %+v", fr, err, *n)
	}
}
