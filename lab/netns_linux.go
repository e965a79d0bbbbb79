package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// netnsDir is where named network namespaces live (ip netns).
const netnsDir = "/run/netns"

// namespace is a named network namespace the lab made, with a netlink
// handle inside it.
type namespace struct {
	name string
	h    netns.NsHandle
	nl   *netlink.Handle
}

func (n *namespace) fd() netlink.NsFd { return netlink.NsFd(n.h) }

func (n *namespace) close() {
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	if n.h.IsOpen() {
		_ = n.h.Close()
	}
}

// createNamespace makes a named namespace and opens a netlink handle in
// it; the calling goroutine's thread is back in its own namespace after.
// Equivalent to: ip netns add $name; ip -n $name link set lo up
func createNamespace(name string) (*namespace, error) {
	if _, err := os.Lstat(filepath.Join(netnsDir, name)); err == nil {
		return nil, fmt.Errorf("create netns %s: %w", name, fs.ErrExist)
	}
	var h netns.NsHandle
	err := onFreshThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		h, err = netns.NewNamed(name)
		if rerr := netns.Set(orig); rerr != nil {
			// The thread is in the wrong namespace: let it die.
			return errThreadLost{rerr}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	ns := &namespace{name: name, h: h}
	if ns.nl, err = netlink.NewHandleAt(h); err != nil {
		ns.close()
		return nil, fmt.Errorf("netlink in netns %s: %w", name, err)
	}
	lo, err := ns.nl.LinkByName("lo")
	if err == nil {
		err = ns.nl.LinkSetUp(lo)
	}
	if err != nil {
		ns.close()
		return nil, fmt.Errorf("set lo up in netns %s: %w", name, err)
	}
	return ns, nil
}

// deleteNamespace removes a named namespace; one that is already gone is
// not an error. The kernel frees it (and the devices in it) once nothing
// holds it.
// Equivalent to: ip netns del $name
func deleteNamespace(name string) error {
	err := netns.DeleteNamed(name)
	if err == nil || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, serr := os.Lstat(filepath.Join(netnsDir, name)); errors.Is(serr, os.ErrNotExist) {
		return nil
	}
	// Not a mount point (a leftover file): remove the file.
	if rerr := os.Remove(filepath.Join(netnsDir, name)); rerr == nil {
		return nil
	}
	return fmt.Errorf("delete netns %s: %w", name, err)
}

// errThreadLost marks a thread left in another namespace.
type errThreadLost struct{ err error }

func (e errThreadLost) Error() string { return "restore the thread's netns: " + e.err.Error() }
func (e errThreadLost) Unwrap() error { return e.err }

// onFreshThread runs fn in a goroutine of its own, locked to its thread,
// and waits for it. When fn reports errThreadLost the thread stays locked,
// so that the runtime ends it with the goroutine instead of reusing a
// thread left in a wrong namespace; the caller's thread is never in doubt.
func onFreshThread(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := fn()
		var lost errThreadLost
		if !errors.As(err, &lost) {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// inNamespace runs fn on a thread inside ns (for /proc/sys writes and
// sockets), then returns the thread to its namespace.
func inNamespace(ns netns.NsHandle, fn func() error) error {
	return onFreshThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			return err
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			return errThreadLost{err}
		}
		return ferr
	})
}

// setSysctls writes net sysctls ("net.ipv4.ip_forward") inside ns.
// Equivalent to: ip netns exec $ns sysctl -w k=v ...
func setSysctls(ns *namespace, kv ...string) error {
	return inNamespace(ns.h, func() error {
		for i := 0; i+1 < len(kv); i += 2 {
			p := filepath.Join("/proc/sys", strings.ReplaceAll(kv[i], ".", "/"))
			if err := os.WriteFile(p, []byte(kv[i+1]), 0o644); err != nil {
				return fmt.Errorf("set %s=%s in netns %s: %w", kv[i], kv[i+1], ns.name, err)
			}
		}
		return nil
	})
}
