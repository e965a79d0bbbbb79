package agent

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"
)

// maxWebFile bounds the web configuration file and each file it names.
const maxWebFile = 1 << 20

// WebConfigSnapshot is the file the daemon serves HTTPS with: a copy of
// listen.web_config_file taken at start, with the certificate, key and
// client CA it names inlined, under state_dir. exporter-toolkit reads its
// configuration again on every connection; serving a snapshot makes the
// file's validation at load, and "a change takes effect at restart", true.
const WebConfigSnapshot = "web-config.yml"

// LoadWebConfig reads a Prometheus web configuration file (exporter-toolkit's
// format) and the files it names, each a regular file of at most 1 MiB
// opened without blocking (symlinks, as Kubernetes mounts secrets, are
// followed), and returns it self-contained: cert_file, key_file and
// client_ca_file become cert, key and client_ca. A file that configures
// neither tls_server_config nor basic_auth_users is refused: an empty or
// truncated secret must not quietly turn TLS and auth off.
func LoadWebConfig(path string) ([]byte, error) {
	raw, err := ReadRegularFile(path, maxWebFile)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	tlsConf, _ := doc["tls_server_config"].(map[string]any)
	users, _ := doc["basic_auth_users"].(map[string]any)
	if len(tlsConf) == 0 && len(users) == 0 {
		return nil, fmt.Errorf("configures neither tls_server_config nor basic_auth_users")
	}
	for _, f := range []struct{ file, inline string }{{"cert_file", "cert"}, {"key_file", "key"}, {"client_ca_file", "client_ca"}} {
		name, _ := tlsConf[f.file].(string)
		if name == "" {
			continue
		}
		if !filepath.IsAbs(name) {
			name = filepath.Join(filepath.Dir(path), name)
		}
		b, err := ReadRegularFile(name, maxWebFile)
		if err != nil {
			return nil, fmt.Errorf("tls_server_config.%s %s: %w", f.file, name, err)
		}
		delete(tlsConf, f.file)
		tlsConf[f.inline] = string(b)
	}
	return yaml.Marshal(doc)
}

// checkWebConfig validates a web configuration file as the server will
// use it: LoadWebConfig, then exporter-toolkit's own checks (certificate
// and key matching, bcrypt user hashes) on the self-contained copy.
func checkWebConfig(path string) error {
	data, err := LoadWebConfig(path)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp("", "roce-agent-web-*.yml")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return web.Validate(f.Name())
}

// ReadRegularFile reads a file the agent was pointed at (its config, a
// web configuration and the files it names) without ever blocking or
// growing without bound: a regular file only, checked on the opened file
// (a FIFO, device or directory is refused before any read; a symlink, as
// Kubernetes mounts secrets, is followed), at most max bytes. Errors
// other than open's do not repeat the path.
func ReadRegularFile(path string, max int) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("is a %s, not a regular file", fileKind(st.Mode()))
	}
	b, err := io.ReadAll(io.LimitReader(f, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > max {
		return nil, fmt.Errorf("is larger than %d KiB", max>>10)
	}
	return b, nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}
