package controller

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestWriteCerts(t *testing.T) {
	dir := t.TempDir()
	files, err := WriteCerts(dir, []string{"localhost", "127.0.0.1"}, []string{"gpu-00", "admin"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "gpu-00.pem", "gpu-00-key.pem", "admin.pem", "admin-key.pem"}
	var got []string
	for _, f := range files {
		got = append(got, filepath.Base(f))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("files %v, want %v", got, want)
	}
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if filepath.Ext(f) == ".pem" && len(f) > 8 && f[len(f)-8:] == "-key.pem" {
			mode = 0o600
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", f, fi.Mode().Perm(), mode)
		}
	}
	// A second run keeps the CA: the first run's certificates still verify.
	caBefore, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	files, err = WriteCerts(dir, nil, []string{"gpu-01"})
	if err != nil || len(files) != 2 {
		t.Fatalf("second run: %v %v", files, err)
	}
	caAfter, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	if string(caBefore) != string(caAfter) {
		t.Error("the second run replaced the CA")
	}
	for _, bad := range []string{"", "../x", "ca", "server", "a/b"} {
		if _, err := WriteCerts(dir, nil, []string{bad}); err == nil {
			t.Errorf("client name %q: no error", bad)
		}
	}

	// The files make a working mutual TLS pair.
	ca, err := LoadCA(filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := tls.LoadX509KeyPair(filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	cliCert, err := tls.LoadX509KeyPair(filepath.Join(dir, "gpu-00.pem"), filepath.Join(dir, "gpu-00-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	ts.StartTLS()
	defer ts.Close()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cliCert}}}}
	resp, err := c.Get(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "gpu-00" {
		t.Errorf("server saw %q", body)
	}
	leaf, _ := x509.ParseCertificate(srvCert.Certificate[0])
	if !slices.Contains(leaf.DNSNames, "localhost") || len(leaf.IPAddresses) != 1 {
		t.Errorf("server SANs %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("server certificate key usages %v", leaf.ExtKeyUsage)
	}
	// Node (and admin) certificates are client and server certificates,
	// with no host names: the CommonName is the identity.
	for _, n := range []string{"gpu-00", "gpu-01", "admin"} {
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, n+".pem"), filepath.Join(dir, n+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(c.Certificate[0])
		if leaf.Subject.CommonName != n || len(leaf.ExtKeyUsage) != 2 ||
			!slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) ||
			len(leaf.DNSNames)+len(leaf.IPAddresses) != 0 || leaf.IsCA {
			t.Errorf("%s: CN %q key usages %v SANs %v %v", n, leaf.Subject.CommonName, leaf.ExtKeyUsage, leaf.DNSNames, leaf.IPAddresses)
		}
	}
}

// Two nodes' certificates make a mutual TLS pair: gpu-00 serves (a peer
// probe API), gpu-01 connects, each verifies the other's chain against the
// CA for its usage and checks the CommonName, not a host name.
func TestNodeCertsServeAndConnect(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteCerts(dir, nil, []string{"gpu-00", "gpu-01"}); err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	load := func(n string) tls.Certificate {
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, n+".pem"), filepath.Join(dir, n+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{load("gpu-00")}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	ts.StartTLS()
	defer ts.Close()
	client := func(want string) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			Certificates:       []tls.Certificate{load("gpu-01")},
			InsecureSkipVerify: true, // the chain and the name are checked below
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("no peer certificate")
				}
				inter := x509.NewCertPool()
				for _, c := range cs.PeerCertificates[1:] {
					inter.AddCert(c)
				}
				if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: ca.Pool(), Intermediates: inter,
					KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
					return err
				}
				if cn := cs.PeerCertificates[0].Subject.CommonName; cn != want {
					return fmt.Errorf("peer is %q, want %q", cn, want)
				}
				return nil
			},
		}}}
	}
	c := client("gpu-00")
	resp, err := c.Get(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.CloseIdleConnections()
	if string(body) != "gpu-01" {
		t.Errorf("gpu-00 saw %q", body)
	}
	c = client("gpu-02")
	if resp, err := c.Get(ts.URL); err == nil {
		resp.Body.Close()
		t.Error("a peer of the wrong name was accepted")
	}
	c.CloseIdleConnections()
}

func TestLoadCAErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteCerts(dir, nil, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(filepath.Join(dir, CACertFile), filepath.Join(dir, "a-key.pem")); err == nil {
		t.Error("a key that is not the CA's: no error")
	}
	if _, err := LoadCA(filepath.Join(dir, "a.pem"), filepath.Join(dir, "a-key.pem")); err == nil {
		t.Error("a leaf as CA: no error")
	}
	os.Remove(filepath.Join(dir, CAKeyFile))
	if _, err := WriteCerts(dir, nil, []string{"b"}); err == nil {
		t.Error("a CA without its key: WriteCerts made a new one")
	}
}
