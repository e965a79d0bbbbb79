package controller

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// shortTempDir is a temporary directory with a path short enough for the
// unix sockets an embedded member puts in it.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// testEtcd starts a single embedded member and a client of it; both stop
// when the test ends.
func testEtcd(t testing.TB) (*Member, *clientv3.Client) {
	t.Helper()
	m := testMember(t, filepath.Join(shortTempDir(t), "etcd"))
	cli, err := NewClient(ClientConfig{Endpoints: m.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return m, cli
}

// testMember starts a single embedded member in dir; it stops when the
// test ends.
func testMember(t testing.TB, dir string) *Member {
	t.Helper()
	m, err := StartMember(context.Background(), MemberConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func TestMemberSockets(t *testing.T) {
	m, cli := testEtcd(t)
	if eps := m.Endpoints(); len(eps) != 1 || !strings.HasPrefix(eps[0], "unix:///") || !strings.HasSuffix(eps[0], "/client.sock") {
		t.Fatalf("endpoints %v, want the unix socket in the data dir", eps)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	// A data dir too long for a socket path: the sockets go elsewhere.
	long := filepath.Join(shortTempDir(t), strings.Repeat("d", 100))
	lm, err := StartMember(ctx, MemberConfig{DataDir: long})
	if err != nil {
		t.Fatal(err)
	}
	sock := strings.TrimPrefix(lm.Endpoints()[0], "unix://")
	if strings.HasPrefix(sock, long) || len(sock) > maxSocketPath {
		t.Errorf("socket %s", sock)
	}
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket dir: %v %v", fi.Mode(), err)
	}
	lm.Close()
	if _, err := os.Stat(filepath.Dir(sock)); !os.IsNotExist(err) {
		t.Errorf("socket dir left behind: %v", err)
	}
	if _, err := StartMember(ctx, MemberConfig{DataDir: long, ListenClient: []string{"unix://" + long + "/c.sock"}}); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("a socket URL too long: %v", err)
	}
}

func TestParseInitialCluster(t *testing.T) {
	names, err := ParseInitialCluster("a=http://10.0.0.1:2380,b=https://10.0.0.2:2380")
	if err != nil || len(names) != 2 || names[0] != "a" || names[1] != "b" {
		t.Fatalf("got %v %v", names, err)
	}
	for _, bad := range []string{"", "a", "a=", "=http://x:1", "a=ftp://x:1", "a=http://x:1,b=unix:///run/b.sock"} {
		if _, err := ParseInitialCluster(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// freeAddr is a loopback TCP address nobody listens on (for a moment).
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestThreeMemberCluster runs a 3-member etcd cluster of embedded members
// (clients on unix sockets, peers on loopback TCP), a store on all three
// endpoints, and keeps serving with one member down.
func TestThreeMemberCluster(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	var cluster, peers []string
	for i := range 3 {
		peers = append(peers, "http://"+freeAddr(t))
		cluster = append(cluster, fmt.Sprintf("m%d=%s", i, peers[i]))
	}
	start := time.Now()
	members := make([]*Member, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			members[i], errs[i] = StartMember(context.Background(), MemberConfig{
				Name:           fmt.Sprintf("m%d", i),
				DataDir:        filepath.Join(dir, fmt.Sprintf("m%d", i)),
				ListenClient:   []string{fmt.Sprintf("unix://%s/m%d-client.sock", dir, i)},
				ListenPeer:     []string{peers[i]},
				InitialCluster: strings.Join(cluster, ","),
			})
		})
	}
	wg.Wait()
	t.Logf("cluster up in %v", time.Since(start))
	var endpoints []string
	for i, m := range members {
		if errs[i] != nil {
			t.Fatalf("member %d: %v", i, errs[i])
		}
		t.Cleanup(m.Close)
		endpoints = append(endpoints, m.Endpoints()...)
	}
	cli, err := NewClient(ClientConfig{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mresp, err := cli.MemberList(ctx)
	if err != nil || len(mresp.Members) != 3 {
		t.Fatalf("member list: %v %v", mresp, err)
	}
	s := testStore(t, cli, "")
	if _, err := s.LoadPlan(ctx, fabricPlan(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	members[2].Close()
	t.Logf("member stopped in %v", time.Since(start))
	if _, err := s.Move(ctx, moveTo("gpu-01", "tenant-a")); err != nil {
		t.Fatalf("move with one member down: %v", err)
	}
	if err := s.WaitReady(ctx); err != nil {
		t.Fatalf("not ready with one member down: %v", err)
	}
}
