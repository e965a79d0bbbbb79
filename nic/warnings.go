package nic

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"
)

// A Warning is a non-fatal problem: a code a program can act on and a
// message for people. Its text form, the inventory's JSON, is
// "code: message".
type Warning struct {
	Code    string
	Message string
}

// The warning codes (docs/inventory.md).
const (
	WarnSysfs           = "sysfs"            // an attribute missing, unreadable or malformed
	WarnNVML            = "nvml"             // an NVML call failed for one GPU
	WarnNVMLUnavailable = "nvml-unavailable" // GPUs come from the sysfs scan
	WarnGPUMissing      = "gpu-missing"      // sysfs has a GPU that NVML does not
	WarnRailAffinity    = "rail-affinity"    // a rail NIC is further than PXB from its GPUs
	WarnRailNoRDMA      = "rail-no-rdma"     // a pinned rail netdev has no RDMA device
	WarnRailMissing     = "rail-missing"     // a pinned device does not exist
	WarnPCIeDegraded    = "pcie-degraded"    // a link trained below its capability
	WarnPortNotActive   = "port-not-active"  // a rail port is not ACTIVE
	WarnGPUNICCount     = "gpu-nic-count"    // GPUs and rail NICs do not pair up
)

func (w Warning) String() string { return w.Code + ": " + w.Message }

// MarshalText is the text form, so JSON carries "code: message".
func (w Warning) MarshalText() ([]byte, error) { return []byte(w.String()), nil }

// Warnings collects the non-fatal problems found while reading a tree: a
// device with an unreadable or malformed attribute is still reported, and
// the problem is named here with the file it came from.
type Warnings struct {
	mu   sync.Mutex
	list []Warning
}

// Add records one warning.
func (w *Warnings) Add(code, format string, args ...any) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, Warning{Code: code, Message: fmt.Sprintf(format, args...)})
}

// List returns the warnings in the order they were recorded.
func (w *Warnings) List() []Warning {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Warning(nil), w.list...)
}

// Strings returns the warnings in their text form.
func (w *Warnings) Strings() []string { return WarningStrings(w.List()) }

// WarningStrings is the text form of each warning.
func WarningStrings(list []Warning) []string {
	if list == nil {
		return nil
	}
	out := make([]string, len(list))
	for i, w := range list {
		out[i] = w.String()
	}
	return out
}

// attr reads one attribute for a device that is reported whatever happens.
// A missing attribute is silent unless required; an unreadable one is
// always a warning. ok is false when there is no value to parse.
func (s *FS) attr(p string, required bool, w *Warnings) (string, bool) {
	v, err := s.ReadString(p)
	switch {
	case err == nil:
		return v, true
	case errors.Is(err, fs.ErrNotExist):
		if required {
			w.Add(WarnSysfs, "missing %s", s.HostPath(p))
		}
	default:
		w.Add(WarnSysfs, "unreadable %s: %v", s.HostPath(p), unwrapPathError(err))
	}
	return "", false
}

// parsed reads an attribute and parses it; a parse failure is a warning
// naming the file and the zero value is returned.
func parsed[T any](s *FS, p string, required bool, w *Warnings, parse func(string) (T, error)) (T, bool) {
	var zero T
	raw, ok := s.attr(p, required, w)
	if !ok {
		return zero, false
	}
	v, err := parse(raw)
	if err != nil {
		w.Add(WarnSysfs, "malformed %s: %v", s.HostPath(p), err)
		return zero, false
	}
	return v, true
}

// unwrapPathError drops the path from an *fs.PathError, which the warning
// already names.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
