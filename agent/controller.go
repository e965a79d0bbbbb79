package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/nic/linkengine"
)

// The controller client (design.md section 5): ControllerSource long-polls
// the node's NodeConfig and hands it to the daemon as a ConfigSource,
// keeps the last good one on disk, and reports the node's status and a
// heartbeat (controller_report.go).

// ControllerFile is the last good controller config under state_dir: the
// NodeConfig last accepted from the controller, with its ETag, written
// atomically. The daemon runs on it when the controller is away at start;
// plan, apply and teardown use it in controller mode.
const ControllerFile = "controller-config.json"

const (
	// maxControllerBody bounds a config response.
	maxControllerBody = 8 << 20
	// maxLastGood bounds the persisted record: the largest config plus
	// its envelope.
	maxLastGood = maxControllerBody + 64<<10
	// maxTokenFile bounds controller.token_file; maxPEMFile the CA,
	// certificate and key files.
	maxTokenFile = 16 << 10
	maxPEMFile   = 1 << 20
	// Retries wait at most backoffBase, doubling up to backoffMax, with
	// full jitter (backoffDelay).
	backoffBase = time.Second
	backoffMax  = time.Minute
	// minPoll spaces config requests that succeed: a controller that
	// answers at once instead of holding the request costs one request a
	// second, not a busy loop.
	minPoll = time.Second
)

// problems checks the controller section, each problem naming its field;
// with a URL it also reads the CA, the client certificate and the token,
// so that a broken file is refused at load, not at the first request.
func (c ControllerConfig) problems() []error {
	var errs []error
	fail := func(field string, err error) { errs = append(errs, fmt.Errorf("controller.%s: %w", field, err)) }
	for _, d := range []struct {
		field  string
		v      time.Duration
		lo, hi time.Duration
		bounds string
	}{
		{"heartbeat_interval", c.HeartbeatInterval, time.Second, 10 * time.Minute, "1s-10m"},
		{"status_interval", c.StatusInterval, 10 * time.Second, 24 * time.Hour, "10s-24h"},
		{"wait", c.Wait, time.Second, 10 * time.Minute, "1s-10m"},
		{"timeout", c.Timeout, time.Second, 5 * time.Minute, "1s-5m"},
	} {
		if d.v < d.lo || d.v > d.hi {
			fail(d.field, fmt.Errorf("%s is outside %s", d.v, d.bounds))
		}
	}
	files := []struct{ field, path string }{{"ca_file", c.CAFile}, {"cert_file", c.CertFile}, {"key_file", c.KeyFile}, {"token_file", c.TokenFile}}
	if c.URL == "" {
		for _, f := range files {
			if f.path != "" {
				fail(f.field, errors.New("is set but controller.url is not"))
			}
		}
		if c.InsecureHTTP {
			fail("insecure_http", errors.New("is set but controller.url is not"))
		}
		return errs
	}
	urls, err := parseControllerURLs(c.URL, c.InsecureHTTP)
	if err != nil {
		fail("url", err)
	}
	for _, u := range urls {
		if u.Scheme == "http" {
			for _, f := range files[:3] {
				if f.path != "" {
					fail(f.field, fmt.Errorf("needs an https controller.url (%s is plain HTTP)", u.Redacted()))
				}
			}
			break
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		if c.CertFile == "" {
			fail("cert_file", errors.New("required with controller.key_file"))
		} else {
			fail("key_file", errors.New("required with controller.cert_file"))
		}
	}
	if _, err := c.rootCAs(); err != nil {
		errs = append(errs, err)
	}
	if c.CertFile != "" && c.KeyFile != "" {
		if _, err := c.keyPair(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.TokenFile != "" {
		if _, err := c.token(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// maxControllerURLs bounds the replicas controller.url lists.
const maxControllerURLs = 16

// parseControllerURLs checks controller.url: one base URL, or the base
// URLs of several controller replicas separated by commas (the agent
// moves to the next when one does not answer).
func parseControllerURLs(raw string, insecure bool) ([]*url.URL, error) {
	parts := strings.Split(raw, ",")
	if len(parts) > maxControllerURLs {
		return nil, fmt.Errorf("lists %d URLs, more than %d", len(parts), maxControllerURLs)
	}
	var out []*url.URL
	seen := map[string]bool{}
	for i, part := range parts {
		u, err := parseControllerURL(strings.TrimSpace(part), insecure)
		if err != nil {
			if len(parts) > 1 {
				return nil, fmt.Errorf("URL %d: %w", i+1, err)
			}
			return nil, err
		}
		if seen[u.String()] {
			return nil, fmt.Errorf("URL %d: %s is listed twice", i+1, v1.Clip(u.Redacted()))
		}
		seen[u.String()] = true
		out = append(out, u)
	}
	return out, nil
}

// parseControllerURL checks the controller's base URL: https (http only
// when insecure), a host, no credentials, query or fragment. The path, if
// any, is a prefix of the API's paths; a trailing slash is dropped.
func parseControllerURL(raw string, insecure bool) (*url.URL, error) {
	if len(raw) > 1024 {
		return nil, fmt.Errorf("%s is longer than 1024 bytes", v1.Clip(raw))
	}
	u, err := url.Parse(raw)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the URL, which may be hostile
		}
		return nil, fmt.Errorf("not a URL: %w", err)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%s carries credentials; use controller.token_file or a client certificate", v1.Clip(u.Redacted()))
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !insecure {
			return nil, fmt.Errorf("%s is plain HTTP: set controller.insecure_http (labs only) or use https", v1.Clip(raw))
		}
	default:
		return nil, fmt.Errorf("%s is not an https:// URL (http:// with controller.insecure_http)", v1.Clip(raw))
	}
	switch {
	case u.Hostname() == "":
		return nil, fmt.Errorf("%s has no host", v1.Clip(raw))
	case u.Opaque != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("%s has a query or fragment; give the base URL only", v1.Clip(raw))
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// rootCAs reads controller.ca_file; nil (the system roots) without one.
func (c ControllerConfig) rootCAs() (*x509.CertPool, error) {
	if c.CAFile == "" {
		return nil, nil
	}
	b, err := ReadRegularFile(c.CAFile, maxPEMFile)
	if err != nil {
		return nil, fmt.Errorf("controller.ca_file: %s: %w", v1.Clip(c.CAFile), err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("controller.ca_file: %s: no PEM certificate in it", v1.Clip(c.CAFile))
	}
	return pool, nil
}

// keyPair reads the client certificate and key; nil without them.
func (c ControllerConfig) keyPair() (*tls.Certificate, error) {
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, nil
	}
	cert, err := ReadRegularFile(c.CertFile, maxPEMFile)
	if err != nil {
		return nil, fmt.Errorf("controller.cert_file: %s: %w", v1.Clip(c.CertFile), err)
	}
	key, err := ReadRegularFile(c.KeyFile, maxPEMFile)
	if err != nil {
		return nil, fmt.Errorf("controller.key_file: %s: %w", v1.Clip(c.KeyFile), err)
	}
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("controller.cert_file: %s with controller.key_file %s: %w", v1.Clip(c.CertFile), v1.Clip(c.KeyFile), err)
	}
	return &pair, nil
}

// token reads the bearer token: the file's content without surrounding
// white space, printable ASCII, at most 16 KiB; "" without a token file.
func (c ControllerConfig) token() (string, error) {
	if c.TokenFile == "" {
		return "", nil
	}
	b, err := ReadRegularFile(c.TokenFile, maxTokenFile)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		switch {
		case tok == "":
			err = errors.New("is empty")
		case strings.IndexFunc(tok, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0:
			err = errors.New("the token has white space, control or non-ASCII characters inside")
		default:
			return tok, nil
		}
	}
	return "", fmt.Errorf("controller.token_file: %s: %w", v1.Clip(c.TokenFile), err)
}

// ControllerNodeName is the node's name towards the controller: node.name,
// else the host name (whatever sysfs_root says).
func ControllerNodeName(cfg Config) (string, error) {
	if cfg.Node.Name != "" {
		return cfg.Node.Name, nil
	}
	name, err := os.Hostname()
	if err != nil || name == "" {
		return "", fmt.Errorf("node.name: required with controller.url (no host name: %w)", err)
	}
	return name, nil
}

// mergeDesired is the agent's settings with a controller's desired state:
// the node keeps its own name.
func mergeDesired(settings Config, nc v1.NodeConfig, node string) Config {
	cfg := settings
	cfg.NodeConfig = nc
	cfg.Node.Name = node
	return cfg
}

// Rejection reasons of a config (roce_agent_controller_config_rejected_total).
const (
	rejectTooLarge  = "too_large"
	rejectDecode    = "decode"
	rejectWrongNode = "wrong_node"
	rejectInvalid   = "invalid"
	rejectEmpty     = "no_desired_state"
)

var rejectReasons = []string{rejectTooLarge, rejectDecode, rejectWrongNode, rejectInvalid, rejectEmpty}

// rejection is a config the agent refuses, with its metric reason.
type rejection struct {
	reason string
	err    error
}

func (r *rejection) Error() string { return r.err.Error() }
func (r *rejection) Unwrap() error { return r.err }

func reject(reason string, format string, args ...any) *rejection {
	return &rejection{reason: reason, err: fmt.Errorf(format, args...)}
}

// decodeNodeConfig decodes a config document: a JSON object (fields the
// agent does not know are ignored, as the v1 contract asks of clients).
func decodeNodeConfig(body []byte) (v1.NodeConfig, *rejection) {
	var nc v1.NodeConfig
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nc, reject(rejectDecode, "decode config: not a JSON object")
	}
	if err := json.Unmarshal(body, &nc); err != nil {
		return nc, reject(rejectDecode, "decode config: %w", err)
	}
	return nc, nil
}

// checkNodeConfig refuses a config that is for another node, invalid, or
// empty: an empty desired state would read as "remove everything".
func checkNodeConfig(nc v1.NodeConfig, node string) *rejection {
	if nc.Node.Name != node {
		return reject(rejectWrongNode, "config for another node: node.name is %s, this node is %s", v1.Clip(nc.Node.Name), v1.Clip(node))
	}
	if err := nc.Validate(); err != nil {
		return reject(rejectInvalid, "invalid config (generation %d): %w", nc.Generation, err)
	}
	if why := nc.NoDesiredState(); why != "" {
		return reject(rejectEmpty, "config (generation %d) has no desired state: %s", nc.Generation, why)
	}
	return nil
}

// LastGood is the persisted record of ControllerFile.
type LastGood struct {
	Node   string        `json:"node"`
	ETag   string        `json:"etag,omitempty"`
	Saved  time.Time     `json:"saved"`
	Config v1.NodeConfig `json:"config"`
}

// readLastGood reads and checks the last good config of node under
// stateDir, as strictly as one from the controller.
func readLastGood(stateDir, node string) (*LastGood, error) {
	path := filepath.Join(stateDir, ControllerFile)
	// The state directory is the agent's own: its files are never
	// followed through a symlink.
	if st, err := os.Lstat(path); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := ReadRegularFile(path, maxLastGood)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var lg LastGood
	if err := json.Unmarshal(b, &lg); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	if rej := checkNodeConfig(lg.Config, node); rej != nil {
		return nil, fmt.Errorf("%s: %w", path, rej)
	}
	return &lg, nil
}

// LastGoodConfig is settings merged with the last good controller config
// the daemon saved under state_dir, checked as the controller's: what
// plan, apply and teardown use in controller mode (they do not ask the
// controller). A missing file is an error wrapping fs.ErrNotExist.
func LastGoodConfig(settings Config) (Config, *LastGood, error) {
	node, err := ControllerNodeName(settings)
	if err != nil {
		return settings, nil, err
	}
	lg, err := readLastGood(settings.StateDir, node)
	if err != nil {
		return settings, nil, err
	}
	cfg := mergeDesired(settings, lg.Config, node)
	if err := cfg.Validate(); err != nil {
		return settings, nil, fmt.Errorf("%s: %w", filepath.Join(settings.StateDir, ControllerFile), err)
	}
	return cfg, lg, nil
}

// backoffDelay is the wait before retry attempt (0 for the first retry):
// uniform in [0, min(limit, base*2^attempt)) ("full jitter"), so that the
// agents of a fabric that lost the controller together do not come back
// in step. r is the draw, uniform in [0, 1) (one outside counts as 0).
func backoffDelay(attempt int, base, limit time.Duration, r float64) time.Duration {
	ceil := limit
	if attempt < 0 {
		attempt = 0
	}
	if attempt < 40 {
		if c := base << attempt; c > 0 && c < limit {
			ceil = c
		}
	}
	if r < 0 || r >= 1 {
		r = 0
	}
	return time.Duration(r * float64(ceil))
}

// ControllerOptions configure a ControllerSource.
type ControllerOptions struct {
	// Config is the agent's settings (file, env and flags; validated),
	// whose controller section says where the controller is.
	Config Config
	// Reread reads the settings again (SIGHUP); nil: they never change.
	Reread func() (Config, error)
	// Version goes into the User-Agent (roce-agent/<version>).
	Version string
	Log     *slog.Logger
	// Rand gives the backoff jitter, uniform in [0, 1); nil:
	// math/rand/v2.
	Rand func() float64
}

// ControllerSource is the daemon's configuration in controller mode: a
// goroutine long-polls GET /v1/nodes/{node}/config, checks each config
// (for this node, valid, with a desired state), keeps the last good one
// on disk and signals Changed; Load merges it with the agent's settings.
// It also reports the node's status and heartbeat (Report) and the
// ControllerConnected condition.
type ControllerSource struct {
	log      *slog.Logger
	bases    []string // the replicas' URLs without a trailing slash
	replica  atomic.Int32
	node     string
	stateDir string
	client   *http.Client
	agent    string // User-Agent
	rand     func() float64
	reread   func() (Config, error)
	metrics  *controllerMetrics
	// pace, retryBase and retryMax are minPoll, backoffBase and
	// backoffMax (shorter in tests).
	pace, retryBase, retryMax time.Duration

	wait, timeout, heartbeat, statusEvery time.Duration

	changed chan struct{}
	nudge   chan struct{}
	// retryNow ends the config loop's back-off when a heartbeat or status
	// got through: the controller is back, ask at once.
	retryNow chan struct{}
	// lastOK: the last config request got an answer it could use.
	lastOK    atomic.Bool
	firstDone chan struct{}
	firstOnce sync.Once

	token atomic.Pointer[string]
	cert  atomic.Pointer[tls.Certificate]

	mu       sync.Mutex // guards what follows
	settings Config
	current  *v1.NodeConfig
	etag     string // If-None-Match: the last config seen (accepted or rejected)
	bad      string // the ETag of the config last rejected, while it is the controller's
	fromDisk *LastGood
	conn     Condition
	rejected string // the rejection last logged
	// rejectMsg is ControllerConnected's message while the controller
	// serves the config last rejected.
	rejectMsg string
	report    reportState
}

// NewControllerSource prepares the client (TLS, token, the node's name)
// from validated settings; Start starts it.
func NewControllerSource(opts ControllerOptions) (*ControllerSource, error) {
	c := opts.Config.Controller
	urls, err := parseControllerURLs(c.URL, c.InsecureHTTP)
	if err != nil {
		return nil, fmt.Errorf("controller.url: %w", err)
	}
	var bases []string
	for _, u := range urls {
		bases = append(bases, u.String())
	}
	node, err := ControllerNodeName(opts.Config)
	if err != nil {
		return nil, err
	}
	roots, err := c.rootCAs()
	if err != nil {
		return nil, err
	}
	s := &ControllerSource{
		log:         opts.Log,
		bases:       bases,
		node:        node,
		stateDir:    opts.Config.StateDir,
		agent:       "roce-agent/" + opts.Version,
		rand:        opts.Rand,
		reread:      opts.Reread,
		metrics:     newControllerMetrics(),
		pace:        minPoll,
		retryBase:   backoffBase,
		retryMax:    backoffMax,
		wait:        positive(c.Wait, 30*time.Second),
		timeout:     positive(c.Timeout, 10*time.Second),
		heartbeat:   positive(c.HeartbeatInterval, 10*time.Second),
		statusEvery: positive(c.StatusInterval, 5*time.Minute),
		changed:     make(chan struct{}, 1),
		nudge:       make(chan struct{}, 1),
		retryNow:    make(chan struct{}, 1),
		firstDone:   make(chan struct{}),
		settings:    opts.Config,
		conn:        Condition{Type: v1.ConditionControllerConnected, Status: StatusUnknown, Reason: "Connecting", Since: time.Now()},
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "controller")
	if s.rand == nil {
		s.rand = rand.Float64
	}
	if err := s.loadCredentials(c); err != nil {
		return nil, err
	}
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    roots,
		// The pair is read again on reload (certificates rotate); without
		// one, no certificate is sent.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if p := s.cert.Load(); p != nil {
				return p, nil
			}
			return &tls.Certificate{}, nil
		},
	}
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   s.timeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	s.client = &http.Client{Transport: transport, CheckRedirect: sameOrigin}
	return s, nil
}

func positive(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// ControllerCredentials is what a client of the controller needs, read
// from the settings exactly as the agent's own client reads them: the
// replicas' base URLs, the TLS roots and client certificate, and the
// bearer token. roce-agent diag asks the controller with them.
type ControllerCredentials struct {
	Bases []string
	TLS   *tls.Config
	Token string
}

// Credentials reads the controller settings' URLs, CA, certificate and
// token; every error names its key.
func (c ControllerConfig) Credentials() (*ControllerCredentials, error) {
	urls, err := parseControllerURLs(c.URL, c.InsecureHTTP)
	if err != nil {
		return nil, fmt.Errorf("controller.url: %w", err)
	}
	cred := &ControllerCredentials{TLS: &tls.Config{MinVersion: tls.VersionTLS12}}
	for _, u := range urls {
		cred.Bases = append(cred.Bases, u.String())
	}
	if cred.TLS.RootCAs, err = c.rootCAs(); err != nil {
		return nil, err
	}
	pair, err := c.keyPair()
	if err != nil {
		return nil, err
	}
	if pair != nil {
		cred.TLS.Certificates = []tls.Certificate{*pair}
	}
	if cred.Token, err = c.token(); err != nil {
		return nil, err
	}
	return cred, nil
}

// SameOriginRedirect is the agent's redirect policy towards the
// controller, for other clients of it (http.Client.CheckRedirect).
func SameOriginRedirect(req *http.Request, via []*http.Request) error { return sameOrigin(req, via) }

// sameOrigin follows a redirect only to the same scheme, host and port:
// the node's credentials never go to another host.
func sameOrigin(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("stopped after 5 redirects")
	}
	first := via[0].URL
	if req.URL.Scheme != first.Scheme || req.URL.Host != first.Host {
		return fmt.Errorf("redirect to %s refused: another host", v1.Clip(req.URL.Redacted()))
	}
	return nil
}

// loadCredentials reads the token and the client certificate.
func (s *ControllerSource) loadCredentials(c ControllerConfig) error {
	tok, err := c.token()
	if err != nil {
		return err
	}
	pair, err := c.keyPair()
	if err != nil {
		return err
	}
	s.token.Store(&tok)
	s.cert.Store(pair)
	return nil
}

// Start reads the last good config from state_dir and starts polling the
// controller until ctx ends.
func (s *ControllerSource) Start(ctx context.Context) {
	lg, err := readLastGood(s.stateDir, s.node)
	switch {
	case err == nil:
		s.mu.Lock()
		s.current, s.etag, s.fromDisk = &lg.Config, lg.ETag, lg
		s.mu.Unlock()
		s.metrics.generation.Set(float64(lg.Config.Generation))
		s.log.Info("last good controller config read", "path", filepath.Join(s.stateDir, ControllerFile), "generation", lg.Config.Generation, "saved", lg.Saved)
	case errors.Is(err, os.ErrNotExist):
	default:
		s.log.Warn("last good controller config ignored", "err", err)
	}
	go s.poll(ctx)
}

// WaitFirst waits until the first request to the controller has an
// outcome (a config, an error or a timeout) or ctx ends.
func (s *ControllerSource) WaitFirst(ctx context.Context) {
	select {
	case <-s.firstDone:
	case <-ctx.Done():
	}
}

// Changed is signalled when a new config is accepted.
func (s *ControllerSource) Changed() <-chan struct{} { return s.changed }

// Load returns the agent's settings merged with the config in use (the
// controller's, else the last good one from disk), validated; an error
// when there is none yet.
func (s *ControllerSource) Load() (Config, error) {
	s.mu.Lock()
	settings, cur, conn := s.settings, s.current, s.conn
	s.mu.Unlock()
	if cur == nil {
		why := "the controller has not answered"
		if conn.Message != "" {
			why = conn.Message
		}
		return settings, fmt.Errorf("no desired state: no config from the controller at %s and no last good config in %s (%s)", strings.Join(s.bases, ", "), filepath.Join(s.stateDir, ControllerFile), why)
	}
	cfg := mergeDesired(settings, *cur, s.node)
	if err := cfg.Validate(); err != nil {
		return settings, err
	}
	return cfg, nil
}

// Reload reads the settings again (SIGHUP), with the token and the client
// certificate, and returns Load's merge. The controller's URL, CA and
// node name take effect at restart, and the log says so.
func (s *ControllerSource) Reload() (Config, error) {
	if s.reread == nil {
		return s.Load()
	}
	settings, err := s.reread()
	if err != nil {
		return settings, err
	}
	s.mu.Lock()
	old := s.settings
	s.mu.Unlock()
	oc, nc := old.Controller, settings.Controller
	if oc.URL != nc.URL || oc.CAFile != nc.CAFile || oc.InsecureHTTP != nc.InsecureHTTP || old.Node.Name != settings.Node.Name ||
		oc.Wait != nc.Wait || oc.Timeout != nc.Timeout || oc.HeartbeatInterval != nc.HeartbeatInterval || oc.StatusInterval != nc.StatusInterval {
		s.log.Warn("controller settings (url, ca_file, insecure_http, intervals) or node.name changed; they take effect at restart")
	}
	if err := s.loadCredentials(nc); err != nil {
		return settings, err
	}
	s.mu.Lock()
	// The running client keeps its own URL and intervals; the rest of
	// the settings apply now.
	settings.Controller = ControllerConfig{
		URL: oc.URL, CAFile: oc.CAFile, InsecureHTTP: oc.InsecureHTTP, CertFile: nc.CertFile, KeyFile: nc.KeyFile, TokenFile: nc.TokenFile,
		HeartbeatInterval: oc.HeartbeatInterval, StatusInterval: oc.StatusInterval, Wait: oc.Wait, Timeout: oc.Timeout,
	}
	settings.Node.Name = old.Node.Name
	s.settings = settings
	s.mu.Unlock()
	return s.Load()
}

// poll is the config loop: long-poll, and back off after a failure.
func (s *ControllerSource) poll(ctx context.Context) {
	attempt := 0
	for ctx.Err() == nil {
		start := time.Now()
		err := s.fetch(ctx)
		s.lastOK.Store(err == nil)
		s.firstOnce.Do(func() { close(s.firstDone) })
		if ctx.Err() != nil {
			return
		}
		wait := s.pace - time.Since(start)
		if err != nil {
			wait = backoffDelay(attempt, s.retryBase, s.retryMax, s.rand())
			attempt++
			s.log.Debug("controller request failed; retrying", "err", err, "in", wait.Round(time.Millisecond))
		} else {
			attempt = 0
		}
		if wait > 0 {
			var retry <-chan struct{}
			if err != nil {
				select { // a success before this failure says nothing
				case <-s.retryNow:
				default:
				}
				retry = s.retryNow
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			case <-retry:
				t.Stop()
				s.log.Debug("the controller answered a report; asking for the config now")
			}
		}
	}
}

// base is the URL of the controller replica in use.
func (s *ControllerSource) base() string {
	return s.bases[int(s.replica.Load())%len(s.bases)]
}

// failover moves to the next controller replica after one did not answer
// (a transport error or a 5xx), when controller.url lists several.
func (s *ControllerSource) failover(from string) {
	if len(s.bases) < 2 {
		return
	}
	i := int(s.replica.Load())
	if s.bases[i%len(s.bases)] != from {
		return // another request moved on already
	}
	if s.replica.CompareAndSwap(int32(i), int32((i+1)%len(s.bases))) {
		s.log.Info("controller replica not answering; trying the next", "url", from, "next", s.base())
	}
}

// url is the controller's URL of one of the node's resources.
func (s *ControllerSource) url(resource string) string {
	return s.base() + "/v1/nodes/" + url.PathEscape(s.node) + "/" + resource
}

// newRequest builds a request with the agent's headers and credentials.
func (s *ControllerSource) newRequest(ctx context.Context, method, target string, body []byte) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", s.agent)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok := s.token.Load(); tok != nil && *tok != "" {
		req.Header.Set("Authorization", "Bearer "+*tok)
	}
	return req, nil
}

// httpError is an answer other than the one expected.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("HTTP %d %s", e.code, http.StatusText(e.code))
	}
	return fmt.Sprintf("HTTP %d: %s", e.code, e.msg)
}

// answerError reads what a refused request's body says (a v1.Error), a
// little of it at most.
func answerError(resp *http.Response) *httpError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	e := &httpError{code: resp.StatusCode}
	var body v1.Error
	if json.Unmarshal(b, &body) == nil && body.Error != "" {
		e.msg = body.Error
		if body.Field != "" {
			e.msg = body.Field + ": " + e.msg
		}
		e.msg = v1.Clip(e.msg)
	}
	return e
}

// requestError is a request that got no answer: "get URL: why" (without
// net/http's own copy of the method and URL).
func requestError(method, target string, err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	return fmt.Errorf("%s %s: %w", strings.ToLower(method), target, err)
}

// Request results (roce_agent_controller_requests_total).
const (
	resultOK          = "ok"
	resultNotModified = "not_modified"
	resultRejected    = "rejected"
	resultHTTPError   = "http_error"
	resultTransport   = "transport_error"
)

// fetch runs one config request and records its outcome; an error means
// back off before the next.
func (s *ControllerSource) fetch(ctx context.Context) error {
	s.mu.Lock()
	etag := s.etag
	s.mu.Unlock()
	base := s.base()
	target, timeout := base+"/v1/nodes/"+url.PathEscape(s.node)+"/config", s.timeout
	if etag != "" && s.firstDoneYet() && s.lastOK.Load() {
		// Long-poll: the controller holds the request until the
		// generation changes or the wait ends. (Not right after a
		// failure: the first answer then says at once that the
		// controller is back.)
		target += "?wait=" + url.QueryEscape(s.wait.String())
		timeout += s.wait
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := s.newRequest(rctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.metrics.request("config", resultTransport)
		s.failover(base)
		err = requestError(http.MethodGet, target, err)
		s.unreachable("Unreachable", err)
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		s.metrics.request("config", resultNotModified)
		s.contact()
		s.mu.Lock()
		bad, msg := s.bad != "" && s.bad == etag, s.rejectMsg
		if !bad {
			s.fromDisk = nil // the controller still serves the config in use
		}
		s.mu.Unlock()
		if bad {
			s.setConn(StatusFalse, "Rejected", msg)
		} else {
			s.connected()
		}
		return nil
	case http.StatusOK:
		return s.receive(resp)
	}
	herr := answerError(resp)
	s.metrics.request("config", resultHTTPError)
	err = fmt.Errorf("get %s: %w", s.url("config"), herr)
	reason := "Unreachable"
	if herr.code >= 400 && herr.code < 500 {
		reason = "Refused" // the controller answers, but not with this node's config
	} else {
		s.failover(base)
	}
	s.unreachable(reason, err)
	return err
}

func (s *ControllerSource) firstDoneYet() bool {
	select {
	case <-s.firstDone:
		return true
	default:
		return false
	}
}

// receive reads a 200 answer: a config to check, then accept or reject.
func (s *ControllerSource) receive(resp *http.Response) error {
	etag := resp.Header.Get("ETag")
	var body []byte
	var rej *rejection
	if resp.ContentLength > maxControllerBody {
		rej = reject(rejectTooLarge, "config of %d bytes is larger than %d MiB", resp.ContentLength, maxControllerBody>>20)
	} else {
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxControllerBody+1))
		switch {
		case err != nil:
			s.metrics.request("config", resultTransport)
			err = fmt.Errorf("read config from %s: %w", s.url("config"), err)
			s.unreachable("Unreachable", err)
			return err
		case len(b) > maxControllerBody:
			rej = reject(rejectTooLarge, "config is larger than %d MiB", maxControllerBody>>20)
		default:
			body = b
		}
	}
	var nc v1.NodeConfig
	if rej == nil {
		nc, rej = decodeNodeConfig(body)
	}
	if rej == nil {
		rej = checkNodeConfig(nc, s.node)
	}
	s.contact()
	if rej != nil {
		s.metrics.request("config", resultRejected)
		s.rejectConfig(rej, etag)
		return rej
	}
	s.metrics.request("config", resultOK)
	s.accept(nc, etag)
	return nil
}

// rejectConfig keeps the config in use, counts the rejection and logs it
// once per distinct failure. The rejected config's ETag is what the next
// long-poll waits past, so a fixed config arrives at once.
func (s *ControllerSource) rejectConfig(rej *rejection, etag string) {
	s.metrics.rejected.WithLabelValues(rej.reason).Inc()
	s.mu.Lock()
	if etag != "" {
		s.etag, s.bad = etag, etag
	}
	logIt := s.rejected != rej.Error()
	s.rejected = rej.Error()
	gen, have := s.inUse()
	s.mu.Unlock()
	keeping := "no config to run on: changing nothing"
	if have {
		keeping = fmt.Sprintf("running on generation %d", gen)
	}
	msg := fmt.Sprintf("%s; %s", rej.Error(), keeping)
	s.mu.Lock()
	s.rejectMsg = msg
	s.mu.Unlock()
	if logIt {
		s.log.Warn("controller config rejected; keeping the last good config", "reason", rej.reason, "err", rej.err, "generation", gen, "have_config", have)
	}
	s.setConn(StatusFalse, "Rejected", msg)
}

// accept makes a checked config the one in use: persisted, then
// signalled when it differs from the running one.
func (s *ControllerSource) accept(nc v1.NodeConfig, etag string) {
	s.mu.Lock()
	changed := s.current == nil || !sameConfig(*s.current, nc)
	// A controller that answers 200 with what the agent has (ignoring
	// If-None-Match) costs no disk write.
	persist := changed || etag != s.etag || s.fromDisk != nil
	s.mu.Unlock()
	if persist {
		lg := LastGood{Node: s.node, ETag: etag, Saved: time.Now().UTC(), Config: nc}
		if b, err := json.Marshal(lg); err != nil {
			s.log.Warn("persist the controller config", "err", err)
		} else if err := linkengine.WriteFileAtomic(filepath.Join(s.stateDir, ControllerFile), append(b, '\n'), 0o600); err != nil {
			s.log.Warn("persist the controller config", "err", err)
		}
	}
	s.mu.Lock()
	s.current, s.etag, s.bad, s.fromDisk, s.rejected = &nc, etag, "", nil, ""
	s.mu.Unlock()
	s.metrics.generation.Set(float64(nc.Generation))
	if changed {
		s.log.Info("controller config received", "generation", nc.Generation)
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
	s.connected()
}

// sameConfig compares two configs as their JSON.
func sameConfig(a, b v1.NodeConfig) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// inUse is the generation of the config in use; s.mu is held.
func (s *ControllerSource) inUse() (int64, bool) {
	if s.current == nil {
		return 0, false
	}
	return s.current.Generation, true
}

// contact records an answer from the controller.
func (s *ControllerSource) contact() { s.metrics.lastContact.SetToCurrentTime() }

// connected: the controller serves the config in use.
func (s *ControllerSource) connected() {
	s.mu.Lock()
	gen, _ := s.inUse()
	s.mu.Unlock()
	s.setConn(StatusTrue, "Connected", fmt.Sprintf("generation %d", gen))
}

// unreachable: the controller did not answer (reason Unreachable) or
// refused the request (Refused). The message says what the node runs on.
func (s *ControllerSource) unreachable(reason string, err error) {
	s.mu.Lock()
	gen, have := s.inUse()
	disk := s.fromDisk
	s.mu.Unlock()
	switch {
	case !have:
		s.setConn(StatusFalse, reason, fmt.Sprintf("%s; no desired state: changing nothing until the controller answers", err))
	case disk != nil:
		s.setConn(StatusFalse, "UsingLastGood", fmt.Sprintf("%s; running on the last good config, generation %d, saved %s", err, gen, disk.Saved.Format(time.RFC3339)))
	default:
		s.setConn(StatusFalse, reason, fmt.Sprintf("%s; running on generation %d", err, gen))
	}
}

// setConn sets ControllerConnected; Since changes with the status only.
// A change of status or reason is logged once (a rejection is logged by
// rejectConfig) and reported.
func (s *ControllerSource) setConn(status v1.ConditionStatus, reason, msg string) {
	now := time.Now()
	s.mu.Lock()
	old := s.conn
	c := Condition{Type: v1.ConditionControllerConnected, Status: status, Reason: reason, Message: msg, Since: old.Since}
	if old.Status != status {
		c.Since = now
	}
	s.conn = c
	s.mu.Unlock()
	if status == StatusTrue {
		s.metrics.connected.Set(1)
	} else {
		s.metrics.connected.Set(0)
	}
	if old.Status == status && old.Reason == reason {
		return
	}
	switch {
	case status == StatusTrue:
		s.log.Info("controller connected", "url", s.base(), "node", s.node, "message", msg)
	case reason != "Rejected":
		s.log.Warn("controller not connected", "reason", reason, "message", msg)
	}
	s.StatusChanged()
}

// Conditions are the node conditions of the controller client:
// ControllerConnected.
func (s *ControllerSource) Conditions() []Condition {
	s.mu.Lock()
	defer s.mu.Unlock()
	return []Condition{s.conn}
}
