package linkengine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// OwnedFile is the ownership record's name under the state directory.
const OwnedFile = "owned.json"

// LoadOwned reads the ownership record; a missing file is an empty record.
func LoadOwned(stateDir string) (Owned, error) {
	o := Owned{Addrs: map[string][]netip.Prefix{}}
	b, err := ReadStateFile(filepath.Join(stateDir, OwnedFile))
	if errors.Is(err, fs.ErrNotExist) {
		return o, nil
	}
	if err != nil {
		return o, fmt.Errorf("read ownership record: %w", err)
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return o, fmt.Errorf("parse ownership record %s: %w (it only matters on kernels before 5.18, which do not mark addresses; move it aside to go on: a newer kernel keeps ownership itself)", filepath.Join(stateDir, OwnedFile), err)
	}
	if o.Addrs == nil {
		o.Addrs = map[string][]netip.Prefix{}
	}
	return o, nil
}

// maxStateFile bounds the files the agent reads back from its state
// directory (an ownership record of 256 rails is a few KB).
const maxStateFile = 4 << 20

// ReadStateFile reads one of the agent's own state files: a regular file
// (not followed through a symlink, never a blocking FIFO) of at most
// maxStateFile bytes.
func ReadStateFile(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxStateFile {
		return nil, fmt.Errorf("%s is larger than %d MiB", path, maxStateFile>>20)
	}
	return b, nil
}

// SaveOwned writes the ownership record atomically (temporary file, fsync,
// rename), so a crash leaves the old record or the new one.
func SaveOwned(stateDir string, o Owned) error {
	b, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return fmt.Errorf("encode ownership record: %w", err)
	}
	return WriteFileAtomic(filepath.Join(stateDir, OwnedFile), append(b, '\n'), 0o600)
}

// WriteFileAtomic replaces path with data through a temporary file in the
// same directory, fsyncing the file and the directory.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// add records addr on netdev; it reports whether the record changed.
func (o *Owned) add(netdev string, addr netip.Prefix) bool {
	if o.Has(netdev, addr) {
		return false
	}
	if o.Addrs == nil {
		o.Addrs = map[string][]netip.Prefix{}
	}
	o.Addrs[netdev] = append(o.Addrs[netdev], addr)
	return true
}

// remove forgets addr on netdev.
func (o *Owned) remove(netdev string, addr netip.Prefix) {
	list := o.Addrs[netdev]
	for i, a := range list {
		if a == addr {
			o.Addrs[netdev] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(o.Addrs[netdev]) == 0 {
		delete(o.Addrs, netdev)
	}
}

func (o Owned) clone() Owned {
	c := Owned{Addrs: make(map[string][]netip.Prefix, len(o.Addrs))}
	for k, v := range o.Addrs {
		c.Addrs[k] = append([]netip.Prefix(nil), v...)
	}
	return c
}
