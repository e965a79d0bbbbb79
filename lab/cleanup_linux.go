package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Cleanup removes what a lab with this prefix left behind when it could
// not call Down (a crash, a kill -9, --keep): it stops the processes that
// run inside the lab's namespaces (SIGTERM, SIGKILL after 5 s), deletes
// the namespaces named like the lab's (<prefix>h<i>, <prefix>l<L>,
// <prefix>l<L>p, <prefix>l<L>t<k>, <prefix>sp, <prefix>mg; the lab's
// lldpds go with them), the Expose link, and DefaultWorkDir(prefix) and
// LLDPRunDir(prefix) if they are marked as a lab's. A work dir
// chosen by the caller is removed with RemoveWorkDir. Nothing else is
// touched; with nothing left it does nothing.
func Cleanup(prefix string) error {
	if err := checkPrefix(prefix); err != nil {
		return err
	}
	names, err := leftovers(prefix)
	if err != nil {
		return err
	}
	var errs []error
	if err := stopProcessesIn(names, 5*time.Second); err != nil {
		errs = append(errs, err)
	}
	for _, n := range names {
		if err := deleteNamespace(n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := deleteExposeLink(prefix); err != nil {
		errs = append(errs, err)
	}
	if err := RemoveWorkDir(DefaultWorkDir(prefix)); err != nil {
		errs = append(errs, err)
	}
	if err := removeLLDPRunDir(prefix); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// RemoveWorkDir removes a lab's work dir: only one that carries the lab's
// marker file; an absent one is not an error.
func RemoveWorkDir(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("work dir %s: %w", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove work dir: %w", err)
	}
	return nil
}

type nsID struct{ dev, ino uint64 }

// stopProcessesIn signals every process whose network namespace is one of
// the named ones: SIGTERM, then SIGKILL to those still there after grace.
func stopProcessesIn(names []string, grace time.Duration) error {
	ids := map[nsID]bool{}
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(netnsDir, n), &st); err == nil {
			ids[nsID{st.Dev, st.Ino}] = true
		}
	}
	if len(ids) == 0 {
		return nil
	}
	pids, err := pidsIn(ids)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for len(pids) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if pids, err = pidsIn(ids); err != nil {
			return err
		}
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return nil
}

// pidsIn lists the processes in any of the namespaces, but never this
// process.
func pidsIn(ids map[nsID]bool) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/proc", e.Name(), "ns", "net"), &st) != nil {
			continue
		}
		if ids[nsID{st.Dev, st.Ino}] {
			out = append(out, pid)
		}
	}
	return out, nil
}
