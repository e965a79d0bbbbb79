package agent

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/exporter-toolkit/web"

	"golang.org/x/sys/unix"
)

// HTTPLimits bound what clients of the agent's HTTP server can hold.
// A zero or negative field means "use the DefaultHTTPLimits value"; call
// Effective to get the values actually applied.
type HTTPLimits struct {
	// MaxConns bounds the accepted connections open at once, counting
	// the one (at most) that was just accepted and waits for a slot.
	// Further connections wait in the kernel's listen backlog, where
	// they cost the process no file descriptor.
	MaxConns int
	// ReadHeaderTimeout bounds reading a request's header; it also
	// bounds how long a new connection may stay silent.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds the time from the end of the request header
	// to the end of the response.
	WriteTimeout time.Duration
	// IdleTimeout is how long a keep-alive connection may wait for its
	// next request.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the size of a request header.
	MaxHeaderBytes int
}

// DefaultHTTPLimits are the limits of the agent's HTTP server: generous
// for a scraper and a few probes, small for anyone trying to exhaust
// the agent's file descriptors.
func DefaultHTTPLimits() HTTPLimits {
	return HTTPLimits{
		MaxConns:          64,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
}

// minHTTPConns is the least MaxConns Effective returns.
const minHTTPConns = 4

// Effective returns l with every zero or negative field replaced by its
// DefaultHTTPLimits value and MaxConns capped at a quarter of the
// process's soft RLIMIT_NOFILE (never below 4), so that HTTP clients can
// never take the descriptors the reconcile loop needs.
func (l HTTPLimits) Effective() HTTPLimits {
	d := DefaultHTTPLimits()
	if l.MaxConns <= 0 {
		l.MaxConns = d.MaxConns
	}
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = d.ReadTimeout
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = d.WriteTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil {
		l.MaxConns = capConns(l.MaxConns, rl.Cur)
	} else {
		l.MaxConns = max(l.MaxConns, minHTTPConns)
	}
	return l
}

// capConns caps want at a quarter of the soft descriptor limit, and
// raises the result to minHTTPConns.
func capConns(want int, softNofile uint64) int {
	if limit := softNofile / 4; uint64(want) > limit {
		want = int(min(limit, math.MaxInt32))
	}
	return max(want, minHTTPConns)
}

// HTTPGuard chooses the connections the agent's HTTP server refuses and
// counts what its connection limiter did, for metrics. The zero value
// refuses nothing. An HTTPGuard must not be copied after first use.
type HTTPGuard struct {
	// Refuse reports whether a connection accepted on the local
	// address local must be closed unserved (the rail interfaces'
	// addresses: the agent's HTTP is not served on the RDMA rails even
	// when it listens on a wildcard address). local is unmapped (an
	// IPv4 connection to a dual-stack socket gives an IPv4 address) and
	// has no zone. Refuse is called on every accepted connection, before
	// it takes a slot, so it must be quick; it may consult a set that
	// changes at any time. Nil refuses nothing.
	Refuse func(local netip.Addr) bool

	// Refused counts connections closed because Refuse returned true.
	Refused atomic.Uint64
	// Evicted counts idle or silent connections closed to make room
	// for a new one while all slots were taken.
	Evicted atomic.Uint64
	// Open is the number of connections holding a slot now.
	Open atomic.Int64
}

// NewHTTPServer returns the server for the agent's HTTP endpoints: it
// serves handler for GET and HEAD only (see ReadOnlyHandler), applies
// limits (made effective) as timeouts and header size bound, and logs
// its own errors to log (nil: slog.Default()) at debug level, at most
// one line per 10 s, except for handler panics, which are errors. Serve
// it with ServeHTTP so that MaxConns and the guard are enforced.
func NewHTTPServer(handler http.Handler, limits HTTPLimits, log *slog.Logger) *http.Server {
	limits = limits.Effective()
	return &http.Server{
		Handler:           ReadOnlyHandler(handler),
		ReadHeaderTimeout: limits.ReadHeaderTimeout,
		ReadTimeout:       limits.ReadTimeout,
		WriteTimeout:      limits.WriteTimeout,
		IdleTimeout:       limits.IdleTimeout,
		MaxHeaderBytes:    limits.MaxHeaderBytes,
		ErrorLog:          newHTTPErrorLog(log),
	}
}

// httpShutdownGrace is how long ServeHTTP waits for in-flight requests
// before it closes every connection.
const httpShutdownGrace = 2 * time.Second

// ServeHTTP serves srv on ln until ctx ends, then shuts srv down: it
// stops accepting, closes at once the idle connections and those that
// have not sent a whole request header, lets in-flight requests finish
// for up to 2 s and then closes every connection. It returns nil once
// ctx has ended (or srv was shut down by someone else), or the error
// that stopped srv from serving, after closing srv.
//
// ServeHTTP takes ln over and closes it. At most limits.MaxConns (made
// effective) connections are open at once; when all slots are taken, a
// new connection evicts the oldest one that is idle between requests or
// has not sent a whole request header yet, and otherwise waits for a
// slot, so that silent clients cannot lock others out.
// Connections that guard (nil: none) refuses are closed at once and
// never take a slot. ServeHTTP sets srv.ConnState (keeping any hook
// already there); srv cannot be served again afterwards.
func ServeHTTP(ctx context.Context, ln net.Listener, srv *http.Server, limits HTTPLimits, guard *HTTPGuard) error {
	return ServeWeb(ctx, ln, srv, limits, guard, "", nil)
}

// ServeWeb is ServeHTTP with a Prometheus web configuration file
// (prometheus/exporter-toolkit, as node_exporter's --web.config.file):
// TLS, client certificates and basic auth. "" serves plain HTTP.
func ServeWeb(ctx context.Context, ln net.Listener, srv *http.Server, limits HTTPLimits, guard *HTTPGuard, webConfigFile string, log *slog.Logger) error {
	if guard == nil {
		guard = new(HTTPGuard)
	}
	lim := newLimitListener(ln, limits.Effective().MaxConns, guard)
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		lim.connState(c, s)
		if prev != nil {
			prev(c, s)
		}
	}
	errc := make(chan error, 1)
	go func() {
		if webConfigFile == "" {
			errc <- srv.Serve(lim)
			return
		}
		if log == nil {
			log = slog.Default()
		}
		noSocket := false
		errc <- web.Serve(lim, srv, &web.FlagConfig{WebListenAddresses: &[]string{}, WebSystemdSocket: &noSocket, WebConfigFile: &webConfigFile}, log)
	}()
	select {
	case err := <-errc:
		_ = lim.Close()
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		_ = srv.Close()
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	// Stop accepting and drop the connections that have not sent a
	// request: http.Server.Shutdown would wait up to 5 s for them.
	_ = lim.Close()
	lim.closeSilent()
	sctx, cancel := context.WithTimeout(context.Background(), httpShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-errc
	_ = lim.Close()
	return nil
}

// ReadOnlyHandler serves GET and HEAD requests with h and answers any
// other method with 405 Method Not Allowed, an "Allow: GET, HEAD"
// header and a short text body: every endpoint of the agent only reads.
func ReadOnlyHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	})
}

// httpErrorEvery is the least time between two lines of the HTTP
// server's error log (handler panics excepted).
const httpErrorEvery = 10 * time.Second

// newHTTPErrorLog returns the http.Server.ErrorLog that turns the
// server's noise ("http: Accept error ...; retrying", TLS handshake
// errors, bad requests) into rate-limited debug lines of log.
func newHTTPErrorLog(l *slog.Logger) *log.Logger {
	if l == nil {
		l = slog.Default()
	}
	return log.New(&httpErrorWriter{log: l}, "", 0)
}

type httpErrorWriter struct {
	log *slog.Logger

	mu         sync.Mutex // guards what follows
	next       time.Time
	suppressed int
}

func (w *httpErrorWriter) Write(p []byte) (int, error) {
	ctx := context.Background()
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "panic serving") {
		w.log.Error("http handler panic", "err", msg)
		return len(p), nil
	}
	if !w.log.Enabled(ctx, slog.LevelDebug) {
		return len(p), nil
	}
	w.mu.Lock()
	now := time.Now()
	if now.Before(w.next) {
		w.suppressed++
		w.mu.Unlock()
		return len(p), nil
	}
	suppressed := w.suppressed
	w.suppressed, w.next = 0, now.Add(httpErrorEvery)
	w.mu.Unlock()
	w.log.Debug("http server", "err", msg, "suppressed", suppressed)
	return len(p), nil
}

// limitListener caps the connections accepted from a net.Listener, and
// closes the ones its guard refuses. Accept holds at most one accepted
// connection waiting for a slot, and takes no further ones meanwhile,
// so the rest stay in the kernel's backlog; slots hold at most
// max-1 served connections, so the total stays at most max.
type limitListener struct {
	net.Listener
	guard     *HTTPGuard
	slots     chan struct{} // one token per served connection
	accepting chan struct{} // one token while an Accept runs
	idle      chan struct{} // a connection became evictable
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	closeErr  error

	mu    sync.Mutex // guards conns and the limitConn fields it names
	conns map[*limitConn]struct{}
}

func newLimitListener(ln net.Listener, maxConns int, guard *HTTPGuard) *limitListener {
	return &limitListener{
		Listener:  ln,
		guard:     guard,
		slots:     make(chan struct{}, max(maxConns-1, 1)),
		accepting: make(chan struct{}, 1),
		idle:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		conns:     make(map[*limitConn]struct{}),
	}
}

// Accept returns the next connection that the guard lets through once
// it has a slot. It returns net.ErrClosed once the listener is closed,
// even while it waits for a slot.
func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.accepting <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	defer func() { <-l.accepting }()
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if l.closed() {
				return nil, net.ErrClosed
			}
			return nil, err
		}
		if l.refused(c) {
			continue
		}
		if err := l.acquire(); err != nil {
			_ = c.Close()
			return nil, err
		}
		lc := &limitConn{Conn: c, l: l, state: stateUnknown}
		l.mu.Lock()
		l.conns[lc] = struct{}{}
		l.mu.Unlock()
		l.guard.Open.Add(1)
		return lc, nil
	}
}

// Close closes the listener and makes a waiting Accept return.
// Connections already accepted stay open.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeErr = l.Listener.Close()
	})
	return l.closeErr
}

func (l *limitListener) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// refused closes c, with a reset and without taking a slot, if the
// guard refuses its local address.
func (l *limitListener) refused(c net.Conn) bool {
	if l.guard.Refuse == nil {
		return false
	}
	local, ok := localAddr(c)
	if !ok || !l.guard.Refuse(local) {
		return false
	}
	l.guard.Refused.Add(1) // before the client can see the reset
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
	return true
}

// localAddr is c's local IP address, unmapped and without zone.
func localAddr(c net.Conn) (netip.Addr, bool) {
	ta, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// acquire takes a slot, evicting the oldest evictable connection when
// all are taken, or waiting for one to close or become evictable.
func (l *limitListener) acquire() error {
	for {
		if l.closed() {
			return net.ErrClosed
		}
		select {
		case l.slots <- struct{}{}:
			return nil
		default:
		}
		if l.evictOldest() {
			continue
		}
		select {
		case l.slots <- struct{}{}:
			return nil
		case <-l.idle:
		case <-l.done:
			return net.ErrClosed
		}
	}
}

// evictOldest closes the connection that has been evictable longest,
// freeing its slot; it reports false if none is evictable.
func (l *limitListener) evictOldest() bool {
	var oldest *limitConn
	l.mu.Lock()
	for c := range l.conns {
		if c.evictable() && (oldest == nil || c.since.Before(oldest.since)) {
			oldest = c
		}
	}
	if oldest != nil {
		oldest.state = stateEvicted
	}
	l.mu.Unlock()
	if oldest == nil {
		return false
	}
	_ = oldest.Close()
	l.guard.Evicted.Add(1)
	return true
}

// connState is the http.Server.ConnState hook that tells the listener
// which connections it may evict: new ones that have not sent a
// request yet and keep-alive ones between requests.
func (l *limitListener) connState(c net.Conn, s http.ConnState) {
	lc, ok := c.(*limitConn)
	if !ok {
		return
	}
	l.mu.Lock()
	if _, open := l.conns[lc]; open && lc.state != stateEvicted {
		lc.state, lc.since = s, time.Now()
	}
	l.mu.Unlock()
	if s == http.StateNew || s == http.StateIdle {
		select {
		case l.idle <- struct{}{}:
		default:
		}
	}
}

// closeSilent closes the connections that have not sent a whole
// request header yet.
func (l *limitListener) closeSilent() {
	var silent []*limitConn
	l.mu.Lock()
	for c := range l.conns {
		if c.state == http.StateNew {
			c.state = stateEvicted
			silent = append(silent, c)
		}
	}
	l.mu.Unlock()
	for _, c := range silent {
		_ = c.Close()
	}
}

// release frees c's slot; limitConn.Close calls it once.
func (l *limitListener) release(c *limitConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	l.guard.Open.Add(-1)
	<-l.slots
}

// limitConn is a connection holding a slot of its limitListener until
// it is closed.
type limitConn struct {
	net.Conn
	l         *limitListener
	closeOnce sync.Once

	// guarded by l.mu
	state http.ConnState // as last told by the ConnState hook
	since time.Time      // when it entered state
}

// States of a limitConn besides http.ConnState's.
const (
	stateUnknown http.ConnState = -1 - iota // no ConnState hook yet
	stateEvicted                            // being closed by the listener
)

// evictable reports whether the connection is between requests or has
// not sent one yet; the caller holds l.mu.
func (c *limitConn) evictable() bool {
	return c.state == http.StateNew || c.state == http.StateIdle
}

// Close closes the connection and, the first time, frees its slot.
func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { c.l.release(c) })
	return err
}

// CloseWrite half-closes the connection when it supports that, as
// http.Server does before closing a connection whose request it did not
// read to the end, so that the client gets the response, not a reset.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
