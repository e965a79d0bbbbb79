package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/fabric"
)

// Request body limits (413 beyond).
const (
	MaxStatusBody = 4 << 20
	MaxBody       = 1 << 20
)

// DefaultMaxWait caps a config long-poll's wait.
const DefaultMaxWait = 5 * time.Minute

// ServerConfig configures a Server.
type ServerConfig struct {
	Store *Store
	Auth  *Authenticator
	// Metrics default to NewMetrics(Store).
	Metrics *Metrics
	Logger  *slog.Logger
	// MaxWait caps ?wait= (default DefaultMaxWait).
	MaxWait time.Duration
}

// Server is the controller's HTTP API (api/v1/openapi.yaml, operations
// tagged controller and admin) plus /metrics, /healthz and /readyz.
type Server struct {
	store   *Store
	auth    *Authenticator
	metrics *Metrics
	log     *slog.Logger
	maxWait time.Duration
	mux     *http.ServeMux

	done      chan struct{}
	closeOnce sync.Once
	// statusSlots bounds the status writes decoded and stored at once: a
	// move makes every moved agent send its status together, and a
	// thousand goroutines each compressing tens of kilobytes would take
	// the CPU from everything else (the next plan change, long-polls).
	// Waiting writes are parked, not runnable.
	statusSlots chan struct{}
}

// access is who may call a route.
type access int

const (
	// anyone: no identity needed (health, readiness, metrics).
	anyone access = iota
	// self: the node named in the path, or an admin.
	self
	// adminOnly: an admin.
	adminOnly
)

// NewServer builds the API over a store.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Store == nil || cfg.Auth == nil {
		return nil, errors.New("server: store and authenticator are required")
	}
	s := &Server{
		store:   cfg.Store,
		auth:    cfg.Auth,
		metrics: cfg.Metrics,
		log:     cfg.Logger,
		maxWait: cfg.MaxWait,
		mux:     http.NewServeMux(),
		done:    make(chan struct{}),

		statusSlots: make(chan struct{}, 2*runtime.GOMAXPROCS(0)),
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(cfg.Store)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxWait <= 0 {
		s.maxWait = DefaultMaxWait
	}
	routes := []struct {
		method, path string
		access       access
		h            http.HandlerFunc
	}{
		{"GET", "/v1/nodes/{node}/config", self, s.getConfig},
		{"PUT", "/v1/nodes/{node}/status", self, s.putStatus},
		{"GET", "/v1/nodes/{node}/status", adminOnly, s.getStatus},
		{"PUT", "/v1/nodes/{node}/lease", self, s.putLease},
		{"GET", "/v1/nodes", adminOnly, s.listNodes},
		{"GET", "/v1/tenants/{tenant}", adminOnly, s.getTenant},
		{"PUT", "/v1/tenants/{tenant}", adminOnly, s.putTenant},
		{"GET", "/v1/tenants/{tenant}/health", adminOnly, s.getTenantHealth},
		{"POST", "/v1/moves", adminOnly, s.postMove},
		{"GET", "/healthz", anyone, s.healthz},
		{"GET", "/readyz", anyone, s.readyz},
		{"GET", "/metrics", anyone, promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}).ServeHTTP},
	}
	allowed := map[string][]string{}
	for _, rt := range routes {
		s.mux.Handle(rt.method+" "+rt.path, s.guard(rt.access, rt.h))
		allowed[rt.path] = append(allowed[rt.path], rt.method)
	}
	for path, methods := range allowed {
		allow := strings.Join(slices.Sorted(slices.Values(methods)), ", ")
		s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, path, allow), "")
		})
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such resource: "+r.URL.Path, "")
	})
	return s, nil
}

// CloseLongPolls ends every waiting long-poll (304) and makes new ones
// answer at once; for http.Server.RegisterOnShutdown.
func (s *Server) CloseLongPolls() {
	s.closeOnce.Do(func() { close(s.done) })
}

// requestInfo is what a handler tells the instrumentation.
type requestInfo struct {
	identity string
	// held: a long-poll that waited (not a latency sample).
	held bool
}

type infoKey struct{}

func info(r *http.Request) *requestInfo {
	if i, ok := r.Context().Value(infoKey{}).(*requestInfo); ok {
		return i
	}
	return &requestInfo{}
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (w *statusRecorder) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ServeHTTP serves the API, timing each request by route pattern.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ri := &requestInfo{}
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, ri))
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	s.mux.ServeHTTP(rec, r)
	route := r.Pattern
	if route == "" {
		route = "unmatched"
	}
	d := time.Since(start)
	if !ri.held {
		s.metrics.observe(route, rec.code, d)
	}
	level := slog.LevelDebug
	if rec.code >= 500 && rec.code != http.StatusServiceUnavailable {
		level = slog.LevelWarn
	}
	s.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path, "route", route, "code", rec.code,
		"duration", d, "identity", ri.identity, "remote", r.RemoteAddr)
}

// guard authenticates and authorizes a request, and refuses API calls
// while the store is not ready.
func (s *Server) guard(acc access, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if acc == anyone {
			h(w, r)
			return
		}
		id, err := s.auth.Identify(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="roce-controller"`)
			writeError(w, http.StatusUnauthorized, err.Error(), "")
			return
		}
		info(r).identity = id.Name
		if !id.Admin {
			if acc == adminOnly {
				writeError(w, http.StatusForbidden, fmt.Sprintf("%s is not an admin identity", id.Name), "")
				return
			}
			if node := r.PathValue("node"); node != id.Name {
				writeError(w, http.StatusForbidden, fmt.Sprintf("%s may not access node %s", id.Name, node), "")
				return
			}
		}
		if err := s.store.Ready(); err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error(), "")
			return
		}
		h(w, r)
	})
}

// ----------------------------------------------------------- responses

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encode response: "+err.Error(), "")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg, field string) {
	body, _ := json.Marshal(v1.Error{Error: msg, Field: field})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// tooLargeError is a request body over its limit.
type tooLargeError struct{ limit int64 }

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("request body is larger than %d bytes", e.limit)
}

// fail answers an error by its kind.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		fe *fabric.FieldError
		nf *fabric.NotFoundError
		ce *fabric.ConflictError
		tl *tooLargeError
	)
	switch {
	case errors.As(err, &tl):
		writeError(w, http.StatusRequestEntityTooLarge, err.Error(), "")
	case errors.As(err, &fe):
		writeError(w, http.StatusBadRequest, err.Error(), fe.Field)
	case errors.As(err, &nf):
		writeError(w, http.StatusNotFound, err.Error(), "")
	case errors.As(err, &ce):
		writeError(w, http.StatusConflict, err.Error(), "")
	case errors.Is(err, ErrNotReady), errors.Is(err, ErrUnavailable), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, err.Error(), "")
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, err.Error(), "")
	}
}

// ------------------------------------------------------------- bodies

// decodeBody reads a JSON body of at most limit bytes into dst: one JSON
// document, no unknown field (the error names it, with its path), no
// trailing data.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, dst any) error {
	data, err := readBody(w, r, limit)
	if err != nil {
		return err
	}
	return decodeJSON(data, dst)
}

// readBody reads a request body of at most limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, &tooLargeError{limit: limit}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &tooLargeError{limit: limit}
		}
		return nil, &fabric.FieldError{Reason: "read request body: " + err.Error()}
	}
	return data, nil
}

// decodeJSON decodes a request body as decodeBody does.
func decodeJSON(data []byte, dst any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return &fabric.FieldError{Reason: "request body is empty"}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return bodyError(err, data, reflect.TypeOf(dst))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &fabric.FieldError{Reason: "request body has data after the JSON document"}
	}
	return nil
}

// bodyError turns a JSON decoding error into a fabric.FieldError naming the
// field.
func bodyError(err error, data []byte, t reflect.Type) error {
	var (
		se *json.SyntaxError
		te *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &se):
		return &fabric.FieldError{Reason: fmt.Sprintf("request body is not JSON: %v (offset %d)", se, se.Offset)}
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return &fabric.FieldError{Reason: fmt.Sprintf("request body: want a JSON %s, got %s", jsonKind(te.Type), te.Value)}
		}
		return &fabric.FieldError{Field: field, Reason: fmt.Sprintf("want %s, got %s", jsonKind(te.Type), te.Value)}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := fieldName(strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`))
		if p := unknownFieldPath(data, t); p != "" {
			name = p
		}
		return &fabric.FieldError{Field: name, Reason: "is not a known field"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &fabric.FieldError{Reason: "request body is truncated JSON"}
	}
	return &fabric.FieldError{Reason: "request body: " + err.Error()}
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return t.String()
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// fieldName is a JSON key as a field path element ("" quoted, so that it
// shows).
func fieldName(k string) string {
	if k == "" {
		return `""`
	}
	return k
}

// unknownFieldPath finds the first key (in sorted order at each level)
// of a JSON document that t has no field for, as a path such as
// "members[2].gpux".
func unknownFieldPath(data []byte, t reflect.Type) string {
	var v any
	if json.Unmarshal(data, &v) != nil {
		return ""
	}
	return walkUnknown(v, t, "")
}

func walkUnknown(v any, t reflect.Type, path string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return ""
	}
	switch x := v.(type) {
	case map[string]any:
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range x {
				if !yield(k) {
					return
				}
			}
		})
		switch t.Kind() {
		case reflect.Struct:
			fields := jsonFields(t)
			for _, k := range keys {
				p := fieldName(k)
				if path != "" {
					p = path + "." + p
				}
				ft, ok := fields[k]
				if !ok {
					for name, f := range fields {
						if strings.EqualFold(name, k) {
							ft, ok = f, true
							break
						}
					}
				}
				if !ok {
					return p
				}
				if u := walkUnknown(x[k], ft, p); u != "" {
					return u
				}
			}
		case reflect.Map:
			for _, k := range keys {
				if u := walkUnknown(x[k], t.Elem(), path+"."+fieldName(k)); u != "" {
					return u
				}
			}
		}
	case []any:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			for i, e := range x {
				if u := walkUnknown(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); u != "" {
					return u
				}
			}
		}
	}
	return ""
}

// jsonFields maps a struct's JSON names to their types, embedded structs
// flattened.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				for k, v := range jsonFields(et) {
					if _, ok := out[k]; !ok {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// checkStatus checks what the schema cannot see in a status.
func checkStatus(st v1.NodeStatus) error {
	if st.AppliedGeneration < 0 {
		return &fabric.FieldError{Field: "applied_generation", Reason: "is negative"}
	}
	checkConds := func(field string, cs []v1.Condition) error {
		for i, c := range cs {
			if c.Type == "" {
				return &fabric.FieldError{Field: fmt.Sprintf("%s[%d].type", field, i), Reason: "is empty"}
			}
			if !slices.Contains(v1.ConditionStatuses, c.Status) {
				return &fabric.FieldError{Field: fmt.Sprintf("%s[%d].status", field, i), Reason: fmt.Sprintf("is %q, want one of %v", c.Status, v1.ConditionStatuses)}
			}
		}
		return nil
	}
	for i, r := range st.Rails {
		if r.Rail < 0 || r.Rail > 255 {
			return &fabric.FieldError{Field: fmt.Sprintf("rails[%d].rail", i), Reason: "is not 0-255"}
		}
		if err := checkConds(fmt.Sprintf("rails[%d].conditions", i), r.Conditions); err != nil {
			return err
		}
	}
	return checkConds("conditions", st.Conditions)
}

// ------------------------------------------------------------ handlers

// etagMatch reports whether an If-None-Match value names etag.
func etagMatch(inm, etag string) bool {
	for part := range strings.SplitSeq(inm, ",") {
		part = strings.TrimPrefix(strings.TrimSpace(part), "W/")
		if part == "*" || part == etag {
			return true
		}
	}
	return false
}

func (s *Server) getConfig(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("node")
	var wait time.Duration
	if q := r.URL.Query(); q.Has("wait") {
		d, err := time.ParseDuration(q.Get("wait"))
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("wait %q is not a duration such as 30s", q.Get("wait")), "wait")
			return
		}
		wait = min(d, s.maxWait)
	}
	inm := r.Header.Get("If-None-Match")
	var timer <-chan time.Time
	for held := false; ; held = true {
		changes := s.store.subscribe(node)
		st, err := s.store.node(node)
		if err != nil {
			if held {
				s.metrics.longPollsDone.WithLabelValues("error").Inc()
			}
			s.fail(w, r, err)
			return
		}
		sc := st.served[node]
		if inm == "" || !etagMatch(inm, sc.etag) {
			body, err := sc.json()
			if err != nil {
				s.fail(w, r, fmt.Errorf("config of %s: %w", node, err))
				return
			}
			if held {
				s.metrics.longPollsDone.WithLabelValues("changed").Inc()
			}
			w.Header().Set("ETag", sc.etag)
			w.Header().Set("Cache-Control", "no-cache")
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body)
			return
		}
		if wait == 0 {
			w.Header().Set("ETag", sc.etag)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if !held {
			info(r).held = true
			s.metrics.longPolls.Inc()
			defer s.metrics.longPolls.Dec()
			t := time.NewTimer(wait)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-changes:
			continue
		case <-timer:
			if err := s.store.Ready(); err != nil {
				s.metrics.longPollsDone.WithLabelValues("error").Inc()
				s.fail(w, r, err)
				return
			}
			s.metrics.longPollsDone.WithLabelValues("timeout").Inc()
		case <-s.done:
			s.metrics.longPollsDone.WithLabelValues("closed").Inc()
		case <-r.Context().Done():
			s.metrics.longPollsDone.WithLabelValues("gone").Inc()
			return
		}
		w.Header().Set("ETag", sc.etag)
		w.WriteHeader(http.StatusNotModified)
		return
	}
}

func (s *Server) putStatus(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("node")
	data, err := readBody(w, r, MaxStatusBody)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// Decoding and compressing take a slot; the etcd write does not.
	select {
	case s.statusSlots <- struct{}{}:
	case <-r.Context().Done():
		s.fail(w, r, r.Context().Err())
		return
	}
	st, stored, err := s.prepareStatus(node, data)
	<-s.statusSlots
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.store.putStatusStored(r.Context(), st, stored); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// prepareStatus decodes and checks a status body and makes the value
// stored.
func (s *Server) prepareStatus(node string, data []byte) (v1.NodeStatus, []byte, error) {
	var st v1.NodeStatus
	if err := decodeJSON(data, &st); err != nil {
		return st, nil, err
	}
	if st.Node != node {
		return st, nil, &fabric.FieldError{Field: "node", Reason: fmt.Sprintf("is %q but the path names node %q", st.Node, node)}
	}
	if err := checkStatus(st); err != nil {
		return st, nil, err
	}
	stored, err := compressStatus(data)
	if err != nil {
		return st, nil, fmt.Errorf("encode status of %s: %w", node, err)
	}
	return st, stored, nil
}

func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.store.Status(r.Context(), r.PathValue("node"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) putLease(w http.ResponseWriter, r *http.Request) {
	var hb v1.Heartbeat
	if err := decodeBody(w, r, MaxBody, &hb); err != nil {
		s.fail(w, r, err)
		return
	}
	if hb.AppliedGeneration < 0 {
		s.fail(w, r, &fabric.FieldError{Field: "applied_generation", Reason: "is negative"})
		return
	}
	if err := s.store.Heartbeat(r.Context(), r.PathValue("node"), hb); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) {
	list, err := s.store.Nodes(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) getTenant(w http.ResponseWriter, r *http.Request) {
	t, err := s.store.Tenant(r.PathValue("tenant"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if t.Members == nil {
		t.Members = []v1.TenantMember{}
	}
	writeJSON(w, http.StatusOK, t)
}

func (s *Server) putTenant(w http.ResponseWriter, r *http.Request) {
	var t v1.Tenant
	if err := decodeBody(w, r, MaxBody, &t); err != nil {
		s.fail(w, r, err)
		return
	}
	if id := r.PathValue("tenant"); t.ID != id {
		s.fail(w, r, &fabric.FieldError{Field: "id", Reason: fmt.Sprintf("is %q but the path names tenant %q", t.ID, id)})
		return
	}
	changed, err := s.store.PutTenant(r.Context(), t)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v1.MoveResult{ChangedNodes: changed})
}

func (s *Server) getTenantHealth(w http.ResponseWriter, r *http.Request) {
	h, err := s.store.TenantHealth(r.Context(), r.PathValue("tenant"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

func (s *Server) postMove(w http.ResponseWriter, r *http.Request) {
	var m v1.Move
	if err := decodeBody(w, r, MaxBody, &m); err != nil {
		s.fail(w, r, err)
		return
	}
	changed, err := s.store.Move(r.Context(), m)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v1.MoveResult{ChangedNodes: changed})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.store.Ready(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, err.Error()+"\n")
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}
