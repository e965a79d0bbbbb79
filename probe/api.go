package probe

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// SessionsPath is the peer probe API's route: POST asks the peer to
// open a one-shot server for one test on one of its rails; DELETE
// SessionsPath/ID ends that server early (the client's run failed), so
// that it frees the NIC's probe slot at once rather than at its timeout.
const SessionsPath = "/v1/probe/sessions"

// MaxRequestBytes bounds a session request's body.
const MaxRequestBytes = 4 << 10

// SessionRequest asks a peer for a one-shot server: for Test on the
// peer's rail Rail, probed from the requester's rail PeerRail.
type SessionRequest struct {
	Rail     int `json:"rail"`
	PeerRail int `json:"peer_rail"`
	Test
}

// SessionResponse says where the server listens (the tool's port on the
// peer's rail address) and until when it waits.
type SessionResponse struct {
	Port    int       `json:"port"`
	Expires time.Time `json:"expires"`
	// ID names the session for DELETE (absent from older agents).
	ID string `json:"id,omitempty"`
}

// APIError is every refusal of the peer probe API: the reason, the
// request field at fault, and when a busy NIC may be free.
type APIError struct {
	Error             string `json:"error"`
	Field             string `json:"field,omitempty"`
	RetryAfterSeconds int    `json:"retry_after_seconds,omitempty"`
}

// Peer is a probe peer of a rail: the same rail of another node of the
// tenant, as the controller lists it.
type Peer struct {
	Node string
	Rail int
	IPv4 netip.Addr
	IPv6 netip.Addr
}

// Addr is the peer's address of a family (invalid when it has none).
func (p Peer) Addr(family string) netip.Addr {
	if family == FamilyIPv6 {
		return p.IPv6
	}
	return p.IPv4
}

// Rail is what a node serves and probes from on one rail: the NIC, the
// rail addresses, the tenant and its peers.
type Rail struct {
	Rail   int
	Netdev string
	Device string
	Port   int
	IPv4   netip.Addr
	IPv6   netip.Addr
	Tenant string
	// MTU is the rail's IP MTU (the path MTU check's full size).
	MTU int
	// TClass is the GRH traffic class probes use (the RoCE ToS); -1
	// leaves the tool's default.
	TClass int
	Peers  []Peer
}

// Addr is the rail's address of a family.
func (r Rail) Addr(family string) netip.Addr {
	if family == FamilyIPv6 {
		return r.IPv6
	}
	return r.IPv4
}

// Peer returns the rail's peer with an address, if any.
func (r Rail) peerAt(a netip.Addr) (Peer, bool) {
	for _, p := range r.Peers {
		if (p.IPv4.IsValid() && p.IPv4 == a) || (p.IPv6.IsValid() && p.IPv6 == a) {
			return p, true
		}
	}
	return Peer{}, false
}

// Host is what the probe API and client need from the node: its rails as
// configured now, and the GID table.
type Host interface {
	// Rail returns a rail this node serves probes on (false: none, or
	// not bound to a tenant).
	Rail(rail int) (Rail, bool)
	// GIDIndex finds the RoCE v2 GID of addr on the rail's device by
	// value.
	GIDIndex(device string, port int, addr netip.Addr, netdev string) (int, error)
}

// API serves the peer probe API. A request is admitted only when it comes
// from the address of a peer listed for the rail it names (from the
// controller), arrives on that rail's own address, and, with TLS, carries
// a certificate whose name is that peer's node; then at most one test per
// NIC runs at a time. A refused request starts no tool.
type API struct {
	Host   Host
	Runner Runner
	Slots  *Slots
	Log    *slog.Logger
	// Timeout bounds a server's life: it serves one run and is killed
	// if the client has not finished by then.
	Timeout time.Duration
	// RequireCertificate makes the certificate's name the identity
	// (mTLS); without it (a lab's plain HTTP) the source address alone
	// says who asks.
	RequireCertificate bool
	// Count is told the result of every request (started, busy,
	// forbidden, not_found, bad_request, too_large, rate_limited, ended,
	// unavailable); nil: nothing.
	Count func(result string)

	mu       sync.Mutex
	buckets  map[string]*bucket
	sessions map[string]*serverSession
}

// serverSession is a running server: who asked for it (the address and
// node a DELETE must come from) and how to end it.
type serverSession struct {
	from   netip.Addr
	node   string
	cancel context.CancelFunc
}

// request rate per requesting rail: a burst, then one a second. An honest
// round asks once per tool and family (at most 6 in a row), a few times
// per interval; a flood is refused before it costs anything.
const (
	rateBurst = 10
	rateEvery = time.Second
)

type bucket struct {
	tokens float64
	last   time.Time
}

func (a *API) allow(node string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.buckets == nil {
		a.buckets = map[string]*bucket{}
	}
	now := time.Now()
	b := a.buckets[node]
	if b == nil {
		b = &bucket{tokens: rateBurst, last: now}
		a.buckets[node] = b
	}
	b.tokens += now.Sub(b.last).Seconds() / rateEvery.Seconds()
	if b.tokens > rateBurst {
		b.tokens = rateBurst
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (a *API) count(result string) {
	if a.Count != nil {
		a.Count(result)
	}
}

// Handler serves SessionsPath.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(SessionsPath, a.serveSession)
	mux.HandleFunc("DELETE "+SessionsPath+"/{id}", a.endSession)
	return mux
}

func (a *API) refuse(w http.ResponseWriter, status int, result, field, format string, args ...any) {
	a.count(result)
	e := APIError{Error: fmt.Sprintf(format, args...), Field: field}
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (a *API) serveSession(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		a.refuse(w, http.StatusMethodNotAllowed, "bad_request", "", "method %s: only POST", r.Method)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			a.refuse(w, http.StatusRequestEntityTooLarge, "too_large", "", "request body larger than %d bytes", MaxRequestBytes)
			return
		}
		a.refuse(w, http.StatusBadRequest, "bad_request", "", "read request: %v", err)
		return
	}
	var req SessionRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		a.refuse(w, http.StatusBadRequest, "bad_request", "", "request body: %v", err)
		return
	}
	if dec.More() {
		a.refuse(w, http.StatusBadRequest, "bad_request", "", "request body: more than one JSON value")
		return
	}
	if err := req.Test.Validate(); err != nil {
		field, _, _ := cutField(err.Error())
		a.refuse(w, http.StatusBadRequest, "bad_request", field, "%v", err)
		return
	}
	rail, ok := a.Host.Rail(req.Rail)
	if !ok {
		a.refuse(w, http.StatusNotFound, "not_found", "rail", "rail %d is not served here (no such rail, or not bound to a tenant)", req.Rail)
		return
	}
	// Who asks: the source address names the peer; the certificate
	// must name the same node.
	remote, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		a.refuse(w, http.StatusForbidden, "forbidden", "", "unknown source address %q", r.RemoteAddr)
		return
	}
	from := remote.Addr().Unmap()
	peer, ok := rail.peerAt(from)
	if !ok {
		a.refuse(w, http.StatusForbidden, "forbidden", "", "%s is not a probe peer of rail %d (tenant %s)", from, req.Rail, rail.Tenant)
		return
	}
	if cn, ok := a.certificateName(w, r); !ok {
		return
	} else if a.RequireCertificate && cn != peer.Node {
		a.refuse(w, http.StatusForbidden, "forbidden", "", "certificate of %q used from %s, which is %s's rail %d address", cn, from, peer.Node, peer.Rail)
		return
	}
	if req.PeerRail != peer.Rail {
		a.refuse(w, http.StatusForbidden, "forbidden", "peer_rail", "peer_rail %d: %s probes from rail %d", req.PeerRail, peer.Node, peer.Rail)
		return
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil {
			if l := ap.Addr().Unmap(); l != rail.IPv4 && l != rail.IPv6 {
				a.refuse(w, http.StatusForbidden, "forbidden", "rail", "rail %d is asked for on %s, which is not its address", req.Rail, l)
				return
			}
		}
	}
	// The rate is per requesting rail: a node probes from each of its
	// rails on its own schedule.
	if !a.allow(peer.Node + "/" + strconv.Itoa(peer.Rail)) {
		w.Header().Set("Retry-After", "1")
		a.refuse(w, http.StatusTooManyRequests, "rate_limited", "", "%s asks too often", peer.Node)
		return
	}
	local := rail.Addr(req.Family)
	if !local.IsValid() || !peer.Addr(req.Family).IsValid() {
		a.refuse(w, http.StatusNotFound, "not_found", "family", "rail %d has no %s address on both ends", req.Rail, req.Family)
		return
	}
	gid, err := a.Host.GIDIndex(rail.Device, rail.Port, local, rail.Netdev)
	if err != nil {
		a.refuse(w, http.StatusServiceUnavailable, "unavailable", "", "rail %d: %v", req.Rail, err)
		return
	}
	release, err := a.Slots.Acquire(rail.Device, fmt.Sprintf("%s for %s", req.Tool, peer.Node), min(req.Test.Expected(), a.Timeout))
	if err != nil {
		var busy *Busy
		if errors.As(err, &busy) {
			secs := int(busy.RetryAfter.Round(time.Second) / time.Second)
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			a.count("busy")
			writeJSON(w, http.StatusConflict, APIError{Error: busy.Error(), RetryAfterSeconds: secs})
			return
		}
		a.refuse(w, http.StatusServiceUnavailable, "unavailable", "", "%v", err)
		return
	}
	port, err := freePort(local)
	if err != nil {
		release()
		a.refuse(w, http.StatusServiceUnavailable, "unavailable", "", "%v", err)
		return
	}
	cmd := ServerCommand(req.Test, Binding{Device: rail.Device, Port: rail.Port, GIDIndex: gid, Addr: local}, port, rail.TClass)
	cmd.Timeout = a.Timeout
	// The server outlives the request: it has its own context, bounded
	// by the timeout, and ended by the requester's DELETE.
	id, err := sessionID()
	if err != nil {
		release()
		a.refuse(w, http.StatusServiceUnavailable, "unavailable", "", "%v", err)
		return
	}
	sctx, cancel := context.WithCancel(context.Background())
	proc, err := a.Runner.Start(sctx, cmd)
	if err != nil {
		cancel()
		release()
		a.refuse(w, http.StatusServiceUnavailable, "unavailable", "", "start %s: %v", req.Tool, err)
		return
	}
	a.mu.Lock()
	if a.sessions == nil {
		a.sessions = map[string]*serverSession{}
	}
	a.sessions[id] = &serverSession{from: from, node: peer.Node, cancel: cancel}
	a.mu.Unlock()
	a.count("started")
	log := a.logger().With("rail", req.Rail, "peer_node", peer.Node, "tool", req.Tool, "family", req.Family, "port", port)
	log.Debug("probe server started", "cmd", cmd.String())
	go func() {
		defer release()
		out, err := proc.Wait()
		a.mu.Lock()
		delete(a.sessions, id)
		a.mu.Unlock()
		ended := sctx.Err() != nil
		cancel()
		switch {
		case err != nil:
			log.Warn("probe server", "err", err)
		case ended:
			log.Info("probe server ended by the client (its run failed)")
		case out.TimedOut:
			log.Info("probe server timed out (the client never finished)", "timeout", a.Timeout)
		case out.ExitCode != 0:
			log.Info("probe server failed", "exit_code", out.ExitCode, "err", toolError(req.Tool, out.Stderr, out.Stdout))
		default:
			log.Debug("probe server done", "duration", out.Duration)
		}
	}()
	writeJSON(w, http.StatusCreated, SessionResponse{Port: port, Expires: time.Now().Add(a.Timeout).UTC(), ID: id})
}

// certificateName is the node a request's client certificate names,
// with mTLS; "" without it (a lab's plain HTTP: the address alone says who
// asks). A request that must carry a certificate and carries none is
// refused here (false).
func (a *API) certificateName(w http.ResponseWriter, r *http.Request) (string, bool) {
	if !a.RequireCertificate {
		return "", true
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		a.refuse(w, http.StatusForbidden, "forbidden", "", "no client certificate")
		return "", false
	}
	return r.TLS.PeerCertificates[0].Subject.CommonName, true
}

// sessionID is a random session name: it is not guessable, and a DELETE
// must come from the session's requester anyway.
func sessionID() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("session id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// endSession serves DELETE SessionsPath/{id}: the requester of a session,
// from the same address and (with mTLS) with the same node's
// certificate, ends its server. 204 when it was running, 404 when there
// is no such session (it ended, or never was).
func (a *API) endSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	remote, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		a.refuse(w, http.StatusForbidden, "forbidden", "", "unknown source address %q", r.RemoteAddr)
		return
	}
	from := remote.Addr().Unmap()
	a.mu.Lock()
	sess := a.sessions[id]
	a.mu.Unlock()
	if sess == nil {
		a.refuse(w, http.StatusNotFound, "not_found", "id", "no running probe session %q", clip(id))
		return
	}
	if from != sess.from {
		a.refuse(w, http.StatusForbidden, "forbidden", "", "session %s was opened from %s, not %s", id, sess.from, from)
		return
	}
	if cn, ok := a.certificateName(w, r); !ok {
		return
	} else if a.RequireCertificate && cn != sess.node {
		a.refuse(w, http.StatusForbidden, "forbidden", "", "session %s is %s's, not %q's", id, sess.node, cn)
		return
	}
	sess.cancel()
	a.count("ended")
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) logger() *slog.Logger {
	if a.Log == nil {
		return slog.Default()
	}
	return a.Log
}

// freePort finds a TCP port free on the rail address for the tool's
// server. perftest's exchange uses TCP; rping's RDMA CM port space is
// separate but free ports there are the common case.
func freePort(a netip.Addr) (int, error) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(a, 0).String())
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", a, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// cutField splits "field: reason".
func cutField(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
		if s[i] == ' ' {
			break
		}
	}
	return "", s, false
}
