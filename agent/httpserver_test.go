package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/roce-agent/roce-agent/nic/nettest"
)

// httpWait bounds every wait in these tests: far above what a healthy
// run needs, so that a regression fails instead of hanging.
const httpWait = 5 * time.Second

func httpTestLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// healthzMux answers /healthz with "ok".
func httpHealthzMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	return mux
}

type httpTestServer struct {
	addr   string
	guard  *HTTPGuard
	cancel context.CancelFunc
	done   chan error // receives ServeHTTP's result
}

// startHTTP serves handler with NewHTTPServer and ServeHTTP on a
// loopback port; the server is stopped when the test ends.
func httpStart(t *testing.T, handler http.Handler, limits HTTPLimits, guard *HTTPGuard) *httpTestServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	if guard == nil {
		guard = new(HTTPGuard)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &httpTestServer{addr: ln.Addr().String(), guard: guard, cancel: cancel, done: make(chan error, 1)}
	srv := NewHTTPServer(handler, limits, httpTestLog())
	go func() { s.done <- ServeHTTP(ctx, ln, srv, limits, guard) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(httpWait):
			t.Errorf("ServeHTTP did not return after cancel")
		}
	})
	return s
}

// stop cancels ServeHTTP and returns its result.
func (s *httpTestServer) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return err
	case <-time.After(httpWait):
		t.Fatalf("ServeHTTP did not return within %v of cancel", httpWait)
		return nil
	}
}

func httpClient(keepAlive bool) *http.Client {
	return &http.Client{
		Timeout:   httpWait,
		Transport: &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 64},
	}
}

// httpDo does one request and returns its status and body.
func httpDo(t *testing.T, c *http.Client, method, url string) (int, http.Header, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(""))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body), err
}

func httpMustGet(t *testing.T, c *http.Client, url string) {
	t.Helper()
	code, _, body, err := httpDo(t, c, http.MethodGet, url)
	if err != nil || code != http.StatusOK || body != "ok\n" {
		t.Fatalf("GET %s = %d %q, %v; want 200 \"ok\\n\"", url, code, body, err)
	}
}

// waitFor polls cond until it holds, failing the test after httpWait.
func httpWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(httpWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", httpWait, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func httpOpenFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(ents)
}

// dialIdle opens n connections that never send a byte.
func httpDialIdle(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	for range n {
		c, err := net.DialTimeout("tcp", addr, httpWait)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		conns = append(conns, c)
	}
	return conns
}

// expectClosed reads from c until the server closes it, failing if it
// is still open after within.
func httpExpectClosed(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", within)
	}
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read: %v; want EOF or connection reset", err)
	}
}

func TestHTTPMethodFilter(t *testing.T) {
	s := httpStart(t, httpHealthzMux(), HTTPLimits{MaxConns: 8}, nil)
	c := httpClient(true)
	url := "http://" + s.addr + "/healthz"
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions} {
		code, hdr, body, err := httpDo(t, c, m, url)
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if code != http.StatusMethodNotAllowed || hdr.Get("Allow") != "GET, HEAD" || body != "method not allowed\n" {
			t.Errorf("%s = %d, Allow %q, body %q; want 405, \"GET, HEAD\", \"method not allowed\\n\"", m, code, hdr.Get("Allow"), body)
		}
	}
	httpMustGet(t, c, url)
	code, _, body, err := httpDo(t, c, http.MethodHead, url)
	if err != nil || code != http.StatusOK || body != "" {
		t.Errorf("HEAD = %d %q, %v; want 200 and no body", code, body, err)
	}
}

func TestHTTPReadOnlyHandlerBodyNotRead(t *testing.T) {
	var called atomic.Bool
	h := ReadOnlyHandler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called.Store(true) }))
	for _, m := range []string{http.MethodPost, "PROPFIND", http.MethodConnect} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(m, "/healthz", strings.NewReader("x")))
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: status %d, Allow %q; want 405, \"GET, HEAD\"", m, rec.Code, rec.Header().Get("Allow"))
		}
	}
	if called.Load() {
		t.Errorf("the wrapped handler ran for a refused method")
	}
}

// TestHTTPConnCapBoundsFDs opens three times MaxConns silent
// connections: the server's own descriptors stay within MaxConns, and
// a client still gets its answer, before and after they are closed.
func TestHTTPConnCapBoundsFDs(t *testing.T) {
	const maxConns, idle = 8, 3 * 8
	limits := HTTPLimits{MaxConns: maxConns, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 30 * time.Second}
	s := httpStart(t, httpHealthzMux(), limits, nil)
	before := httpOpenFDs(t)
	conns := httpDialIdle(t, s.addr, idle)
	// The listener accepts every one of them, evicting the oldest
	// silent one whenever all slots are taken.
	httpWaitFor(t, "all idle connections accepted", func() bool {
		return s.guard.Open.Load()+int64(s.guard.Evicted.Load()) == idle
	})
	if open := s.guard.Open.Load(); open > maxConns {
		t.Errorf("server holds %d connections, cap %d", open, maxConns)
	}
	// idle descriptors are the client ends, the rest the server's.
	const slack = 4
	grown := httpOpenFDs(t) - before
	if server := grown - idle; server > maxConns+slack {
		t.Errorf("open files grew by %d for %d client connections: the server holds %d, want at most %d+%d", grown, idle, server, maxConns, slack)
	}
	t.Logf("open files grew by %d for %d idle connections (cap %d); evicted %d", grown, idle, maxConns, s.guard.Evicted.Load())

	url := "http://" + s.addr + "/healthz"
	httpMustGet(t, httpClient(false), url) // served while the idle ones are still open
	for _, c := range conns {
		_ = c.Close()
	}
	httpMustGet(t, httpClient(false), url)
	httpWaitFor(t, "server connections closed", func() bool { return s.guard.Open.Load() == 0 })
	if grown := httpOpenFDs(t) - before; grown > slack {
		t.Errorf("open files still %d above the start after every client closed", grown)
	}
}

// TestHTTPIdleFlood is the attack of the field report at a smaller
// scale (HTTP_FLOOD_CONNS overrides the 1000 connections): silent
// connections by the thousand, with the default limits, cost the server
// at most MaxConns descriptors and do not keep /healthz from answering.
func TestHTTPIdleFlood(t *testing.T) {
	flood := 1000
	if v := os.Getenv("HTTP_FLOOD_CONNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("HTTP_FLOOD_CONNS: %v", err)
		}
		flood = n
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur < uint64(flood)+256 {
		t.Skipf("RLIMIT_NOFILE %d too low for %d connections", rl.Cur, flood)
	}
	limits := DefaultHTTPLimits()
	limits.ReadHeaderTimeout = 30 * time.Second // they stay silent throughout
	maxConns := limits.Effective().MaxConns
	s := httpStart(t, httpHealthzMux(), limits, nil)
	before := httpOpenFDs(t)
	httpDialIdle(t, s.addr, flood)
	httpWaitFor(t, "flood accepted", func() bool {
		return s.guard.Open.Load()+int64(s.guard.Evicted.Load()) == int64(flood)
	})
	grown := httpOpenFDs(t) - before
	if server := grown - flood; server > maxConns+4 {
		t.Errorf("server holds %d descriptors for %d silent connections, cap %d", server, flood, maxConns)
	}
	c := httpClient(false)
	var worst time.Duration
	for range 10 {
		start := time.Now()
		httpMustGet(t, c, "http://"+s.addr+"/healthz")
		worst = max(worst, time.Since(start))
	}
	t.Logf("%d silent connections: open files +%d (%d client ends), server holds %d, evicted %d; slowest of 10 GETs %v",
		flood, grown, flood, s.guard.Open.Load(), s.guard.Evicted.Load(), worst.Round(time.Microsecond))
}

func TestHTTPIdleTimeout(t *testing.T) {
	limits := HTTPLimits{MaxConns: 8, IdleTimeout: 200 * time.Millisecond, ReadHeaderTimeout: 30 * time.Second}
	s := httpStart(t, httpHealthzMux(), limits, nil)
	c, err := net.DialTimeout("tcp", s.addr, httpWait)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(httpWait))
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("response %d, close %v; want 200 keep-alive", resp.StatusCode, resp.Close)
	}
	// Well under ReadHeaderTimeout: only IdleTimeout can close it.
	httpExpectClosed(t, c, httpWait)
}

func TestHTTPReadHeaderTimeout(t *testing.T) {
	limits := HTTPLimits{MaxConns: 8, ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 30 * time.Second, ReadTimeout: 30 * time.Second}
	s := httpStart(t, httpHealthzMux(), limits, nil)
	c, err := net.DialTimeout("tcp", s.addr, httpWait)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: agent\r\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	httpExpectClosed(t, c, httpWait)
	httpWaitFor(t, "slot released", func() bool { return s.guard.Open.Load() == 0 })
}

func TestHTTPGuardRefusesLocalAddr(t *testing.T) {
	loopback := netip.MustParseAddr("127.0.0.1")
	var on atomic.Bool
	on.Store(true)
	var asked sync.Map
	guard := &HTTPGuard{Refuse: func(local netip.Addr) bool {
		asked.Store(local, true)
		return on.Load() && local == loopback
	}}
	s := httpStart(t, httpHealthzMux(), HTTPLimits{MaxConns: 8}, guard)
	url := "http://" + s.addr + "/healthz"

	code, _, _, err := httpDo(t, httpClient(false), http.MethodGet, url)
	if err == nil {
		t.Fatalf("GET on a refused address = %d, want a failed connection", code)
	}
	if n := guard.Refused.Load(); n == 0 {
		t.Errorf("Refused = 0 after a refused connection")
	}
	if _, ok := asked.Load(loopback); !ok {
		t.Errorf("Refuse was not asked about %v", loopback)
	}
	if open := guard.Open.Load(); open != 0 {
		t.Errorf("a refused connection holds a slot: Open = %d", open)
	}

	on.Store(false) // the rail set changed: no longer refused
	refused := guard.Refused.Load()
	httpMustGet(t, httpClient(false), url)
	if n := guard.Refused.Load(); n != refused {
		t.Errorf("Refused went from %d to %d on an allowed connection", refused, n)
	}
}

func TestHTTPLocalAddr(t *testing.T) {
	for _, tc := range []struct {
		addr *net.TCPAddr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 1}, "127.0.0.1"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.1.2.3"), Port: 1}, "10.1.2.3"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 1, Zone: "eth0"}, "fe80::1"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 1}, "2001:db8::7"},
	} {
		got, ok := localAddr(httpFakeConn{local: tc.addr})
		if !ok || got != netip.MustParseAddr(tc.want) {
			t.Errorf("localAddr(%v) = %v, %v; want %s", tc.addr, got, ok, tc.want)
		}
	}
	if _, ok := localAddr(httpFakeConn{local: &net.UnixAddr{Name: "/x", Net: "unix"}}); ok {
		t.Errorf("localAddr of a unix socket reported ok")
	}
}

type httpFakeConn struct {
	net.Conn
	local net.Addr
}

func (c httpFakeConn) LocalAddr() net.Addr { return c.local }

func TestHTTPServeStopsOnCancel(t *testing.T) {
	s := httpStart(t, httpHealthzMux(), HTTPLimits{MaxConns: 8}, nil)
	keep := httpClient(true)
	httpMustGet(t, keep, "http://"+s.addr+"/healthz") // leaves an idle keep-alive connection
	idle := httpDialIdle(t, s.addr, 1)[0]             // and a silent one
	if err := s.stop(t); err != nil {
		t.Fatalf("ServeHTTP = %v, want nil", err)
	}
	if c, err := net.DialTimeout("tcp", s.addr, httpWait); err == nil {
		c.Close()
		t.Fatalf("port %s still accepts after ServeHTTP returned", s.addr)
	}
	httpExpectClosed(t, idle, httpWait)
}

// TestHTTPServeForcesCloseAfterGrace: a request that never finishes
// does not keep ServeHTTP from returning.
func TestHTTPServeForcesCloseAfterGrace(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	s := httpStart(t, h, HTTPLimits{MaxConns: 8}, nil)
	reqErr := make(chan error, 1)
	go func() {
		_, _, _, err := httpDo(t, httpClient(false), http.MethodGet, "http://"+s.addr+"/")
		reqErr <- err
	}()
	select {
	case <-entered:
	case <-time.After(httpWait):
		t.Fatalf("handler not reached")
	}
	start := time.Now()
	if err := s.stop(t); err != nil {
		t.Fatalf("ServeHTTP = %v, want nil", err)
	}
	t.Logf("ServeHTTP returned %v after cancel with a stuck request", time.Since(start).Round(time.Millisecond))
	select {
	case err := <-reqErr:
		if err == nil {
			t.Errorf("stuck request succeeded; want it cut off")
		}
	case <-time.After(httpWait):
		t.Fatalf("stuck request not cut off")
	}
}

// TestHTTPEvictsIdleNotActive: at the cap, a new client gets a slot by
// evicting silent connections, never one whose request is being
// served; with only active ones, it waits for one to finish.
func TestHTTPEvictsIdleNotActive(t *testing.T) {
	const maxConns = 4 // serves 3, the 4th waits accepted
	entered := make(chan struct{}, maxConns)
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	mux := http.NewServeMux()
	mux.Handle("/healthz", httpHealthzMux())
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		_, _ = w.Write([]byte("done\n"))
	})
	limits := HTTPLimits{MaxConns: maxConns, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 30 * time.Second}
	s := httpStart(t, mux, limits, nil)
	url := "http://" + s.addr

	// Silent connections fill the slots; a GET evicts them.
	silent := httpDialIdle(t, s.addr, maxConns)
	httpWaitFor(t, "silent connections accepted", func() bool {
		return s.guard.Open.Load()+int64(s.guard.Evicted.Load()) == maxConns
	})
	httpMustGet(t, httpClient(false), url+"/healthz")
	if s.guard.Evicted.Load() == 0 {
		t.Errorf("no connection evicted to serve a GET at the cap")
	}
	for _, c := range silent {
		_ = c.Close()
	}
	httpWaitFor(t, "silent connections closed", func() bool { return s.guard.Open.Load() == 0 })

	// Active requests take every slot: they are not evicted.
	evicted := s.guard.Evicted.Load()
	blocked := make(chan int, maxConns)
	for range maxConns - 1 {
		go func() {
			code, _, _, _ := httpDo(t, httpClient(false), http.MethodGet, url+"/block")
			blocked <- code
		}()
	}
	for range maxConns - 1 {
		select {
		case <-entered:
		case <-time.After(httpWait):
			t.Fatalf("blocking requests not all served")
		}
	}
	late := make(chan error, 1)
	go func() {
		code, _, _, err := httpDo(t, httpClient(false), http.MethodGet, url+"/healthz")
		if err == nil && code != http.StatusOK {
			err = errors.New(http.StatusText(code))
		}
		late <- err
	}()
	select {
	case err := <-late:
		t.Fatalf("GET served while every slot was active (err %v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	if n := s.guard.Evicted.Load(); n != evicted {
		t.Errorf("active connections evicted: Evicted %d -> %d", evicted, n)
	}
	unblock()
	for range maxConns - 1 {
		select {
		case code := <-blocked:
			if code != http.StatusOK {
				t.Errorf("blocked request = %d, want 200 (not cut off)", code)
			}
		case <-time.After(httpWait):
			t.Fatalf("blocked requests did not finish")
		}
	}
	select {
	case err := <-late:
		if err != nil {
			t.Errorf("waiting GET: %v", err)
		}
	case <-time.After(httpWait):
		t.Fatalf("waiting GET not served after slots freed")
	}
}

// TestHTTPLimitListener: slots are released once per connection, and
// Close unblocks an Accept waiting for one.
func TestHTTPLimitListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	guard := new(HTTPGuard)
	lim := newLimitListener(ln, 2, guard) // one served + one waiting
	defer lim.Close()
	addr := ln.Addr().String()
	httpDialIdle(t, addr, 1)

	type accepted struct {
		c   net.Conn
		err error
	}
	accept := func() chan accepted {
		ch := make(chan accepted, 1)
		go func() {
			c, err := lim.Accept()
			ch <- accepted{c, err}
		}()
		return ch
	}
	wait := func(ch chan accepted) accepted {
		t.Helper()
		select {
		case a := <-ch:
			return a
		case <-time.After(httpWait):
			t.Fatalf("Accept did not return")
			return accepted{}
		}
	}
	blocked := func(ch chan accepted) {
		t.Helper()
		select {
		case a := <-ch:
			t.Fatalf("Accept returned (%v, %v) with every slot taken", a.c, a.err)
		case <-time.After(100 * time.Millisecond):
		}
	}

	first := wait(accept())
	if first.err != nil {
		t.Fatalf("Accept: %v", first.err)
	}
	httpDialIdle(t, addr, 1)
	second := accept()
	blocked(second)
	_ = first.c.Close()
	_ = first.c.Close() // a second Close must not free a second slot
	a := wait(second)
	if a.err != nil {
		t.Fatalf("Accept after a slot freed: %v", a.err)
	}
	defer a.c.Close()
	if n := guard.Open.Load(); n != 1 {
		t.Errorf("Open = %d, want 1", n)
	}
	httpDialIdle(t, addr, 1)
	third := accept()
	blocked(third)
	_ = lim.Close()
	if a := wait(third); !errors.Is(a.err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", a.err)
	}
	if _, err := lim.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a closed listener = %v, want net.ErrClosed", err)
	}
}

func TestHTTPLimitsEffective(t *testing.T) {
	got := HTTPLimits{}.Effective()
	d := DefaultHTTPLimits()
	if got.ReadHeaderTimeout != d.ReadHeaderTimeout || got.ReadTimeout != d.ReadTimeout || got.WriteTimeout != d.WriteTimeout ||
		got.IdleTimeout != d.IdleTimeout || got.MaxHeaderBytes != d.MaxHeaderBytes {
		t.Errorf("zero limits made effective = %+v, want the defaults %+v", got, d)
	}
	if got.MaxConns < minHTTPConns || got.MaxConns > d.MaxConns {
		t.Errorf("MaxConns = %d, want within [%d, %d]", got.MaxConns, minHTTPConns, d.MaxConns)
	}
	keep := HTTPLimits{MaxConns: 5, ReadHeaderTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 3 * time.Second, IdleTimeout: 4 * time.Second, MaxHeaderBytes: 100}
	if got := keep.Effective(); got != keep {
		t.Errorf("Effective(%+v) = %+v, want unchanged", keep, got)
	}
	for _, tc := range []struct {
		want int
		soft uint64
		out  int
	}{
		{64, 1 << 20, 64},
		{64, 100, 25},
		{64, 8, 4},
		{0, 1024, 4},
		{1000, ^uint64(0), 1000},
	} {
		if got := capConns(tc.want, tc.soft); got != tc.out {
			t.Errorf("capConns(%d, %d) = %d, want %d", tc.want, tc.soft, got, tc.out)
		}
	}
}

func TestHTTPErrorLogRateLimited(t *testing.T) {
	var buf bytes.Buffer
	l := newHTTPErrorLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	for range 100 {
		l.Printf("http: Accept error: accept tcp [::]:9100: accept4: too many open files; retrying in 5ms")
	}
	l.Printf("http: panic serving 10.0.0.1:1234: boom")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("logged %d lines for 100 accept errors and a panic, want 2:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], "level=DEBUG") || !strings.Contains(lines[0], "Accept error") {
		t.Errorf("first line %q, want a debug line with the accept error", lines[0])
	}
	if !strings.Contains(lines[1], "level=ERROR") || !strings.Contains(lines[1], "panic serving") {
		t.Errorf("second line %q, want an error line with the panic", lines[1])
	}

	buf.Reset()
	quiet := newHTTPErrorLog(slog.New(slog.NewTextHandler(&buf, nil))) // info level
	quiet.Printf("http: TLS handshake error from 10.0.0.1:1: EOF")
	if buf.Len() != 0 {
		t.Errorf("logged %q at info level, want nothing", buf.String())
	}
}

// BenchmarkHTTPServerGET compares a GET of a /healthz-like handler
// through NewHTTPServer+ServeHTTP with a plain http.Server: keep-alive,
// serial and parallel, and one connection per request.
func BenchmarkHTTPServerGET(b *testing.B) {
	serve := map[string]func(b *testing.B, ln net.Listener) func(){
		"plain": func(b *testing.B, ln net.Listener) func() {
			srv := &http.Server{Handler: httpHealthzMux(), ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = srv.Serve(ln) }()
			return func() { _ = srv.Close() }
		},
		"guarded": func(b *testing.B, ln net.Listener) func() {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			guard := &HTTPGuard{Refuse: func(netip.Addr) bool { return false }}
			srv := NewHTTPServer(httpHealthzMux(), DefaultHTTPLimits(), httpTestLog())
			go func() { _ = ServeHTTP(ctx, ln, srv, DefaultHTTPLimits(), guard); close(done) }()
			return func() { cancel(); <-done }
		},
	}
	for _, name := range []string{"plain", "guarded"} {
		for _, mode := range []string{"serial", "parallel", "newconn"} {
			b.Run(name+"/"+mode, func(b *testing.B) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatalf("listen: %v", err)
				}
				stop := serve[name](b, ln)
				defer stop()
				// newconn: a connection per request, through Accept,
				// the guard and the ConnState hook every time.
				c := httpClient(mode != "newconn")
				defer c.Transport.(*http.Transport).CloseIdleConnections()
				url := "http://" + ln.Addr().String() + "/healthz"
				get := func() {
					resp, err := c.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
					}
				}
				get()
				b.ReportAllocs()
				b.ResetTimer()
				if mode != "parallel" {
					for b.Loop() {
						get()
					}
					return
				}
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						get()
					}
				})
			})
		}
	}
}

// TestHTTPServeWebConfig: with a web configuration file the endpoint is
// HTTPS with basic auth (exporter-toolkit), behind the same limits: no
// credentials get 401, the right ones 200, plain HTTP gets nothing, and
// POST is still refused.
func TestHTTPServeWebConfig(t *testing.T) {
	cfg := nettest.WebConfig(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	limits := DefaultHTTPLimits()
	srv := NewHTTPServer(h, limits, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ServeWeb(ctx, ln, srv, limits, nil, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeWeb: %v", err)
		}
	}()
	base := "https://" + ln.Addr().String() + "/healthz"
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(method, user, pass string) int {
		t.Helper()
		req, _ := http.NewRequest(method, base, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get("GET", "", ""); got != http.StatusUnauthorized {
		t.Errorf("no credentials: %d, want 401", got)
	}
	if got := get("GET", nettest.WebUser, "wrong"); got != http.StatusUnauthorized {
		t.Errorf("wrong password: %d, want 401", got)
	}
	if got := get("GET", nettest.WebUser, nettest.WebPassword); got != http.StatusOK {
		t.Errorf("right credentials: %d, want 200", got)
	}
	if got := get("POST", nettest.WebUser, nettest.WebPassword); got != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", got)
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP was served")
		}
	}
}
