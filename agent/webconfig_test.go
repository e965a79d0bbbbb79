package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roce-agent/roce-agent/nic/nettest"
)

func TestLoadWebConfig(t *testing.T) {
	good := nettest.WebConfig(t)
	data, err := LoadWebConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	if !strings.Contains(s, "BEGIN CERTIFICATE") || !strings.Contains(s, "PRIVATE KEY") || strings.Contains(s, "cert_file") || strings.Contains(s, "key_file") {
		t.Errorf("the snapshot is not self-contained:\n%s", s)
	}
	if err := checkWebConfig(good); err != nil {
		t.Errorf("a good file: %v", err)
	}

	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "cert.fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"empty", write("empty.yml", ""), "configures neither tls_server_config nor basic_auth_users"},
		{"comments only", write("comments.yml", "# nothing\n"), "configures neither"},
		{"a FIFO as the certificate", write("fifo.yml", "tls_server_config:\n  cert_file: "+fifo+"\n  key_file: k.pem\n"), "tls_server_config.cert_file " + fifo + ": is a FIFO, not a regular file"},
		{"/dev/zero as the key", write("zero.yml", "tls_server_config:\n  cert_file: "+write("c.pem", "x")+"\n  key_file: /dev/zero\n"), "tls_server_config.key_file /dev/zero: is a character device, not a regular file"},
		{"/dev/zero as the file", "/dev/zero", "is a character device, not a regular file"},
		{"a directory", dir, "is a directory, not a regular file"},
	} {
		done := make(chan error, 1)
		go func() { _, err := LoadWebConfig(tc.path); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: blocked", tc.name)
		}
	}
}
