package nic

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"
)

// Warnings collects the non-fatal problems found while reading a tree: a
// device with an unreadable or malformed attribute is still reported, and
// the problem is named here with the file it came from.
type Warnings struct {
	mu   sync.Mutex
	list []string
}

// Addf records one warning.
func (w *Warnings) Addf(format string, args ...any) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, fmt.Sprintf(format, args...))
}

// List returns the warnings in the order they were recorded.
func (w *Warnings) List() []string {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.list...)
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
			w.Addf("sysfs: missing %s", s.HostPath(p))
		}
	default:
		w.Addf("sysfs: unreadable %s: %v", s.HostPath(p), unwrapPathError(err))
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
		w.Addf("sysfs: malformed %s: %v", s.HostPath(p), err)
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
