package diag

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/roce-agent/roce-agent/agent"
	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// Controller and daemon checks: diag asks the controller for the node's
// config as the daemon does, and the running daemon for its health and
// conditions. Both are optional: without a controller.url the node is in
// local mode, and diag works without the daemon.

// requestTimeout bounds each request diag makes to the daemon or the
// controller (within the check's own deadline); tests shorten it.
var requestTimeout = 5 * time.Second

const (
	// maxConfigBody bounds a controller config, as the agent does.
	maxConfigBody = 8 << 20
	// maxDaemonBody bounds the daemon's answers.
	maxDaemonBody = 8 << 20
)

func init() {
	register(
		Check{
			ID: "CTRL-CONN-001", Title: "controller reachable",
			Doc: "With `controller.url` set, asks each controller replica for this node's config (`GET /v1/nodes/{node}/config`) with the agent's CA, client certificate and token. " +
				"A controller that cannot be reached, refuses the node's credentials or has no config for its name leaves the daemon on its last good config, and a new node with nothing.",
			Remedy: "connection refused or timeout: check the controller is running and the route and firewall from the management network to its port; 401/403: check `controller.token_file` or the client certificate (`controller.cert_file`, `key_file`) and that the controller knows this node's identity; 404: register the node in the controller under the name diag shows, or set `node.name` to the name the controller knows; TLS errors: `controller.ca_file` must hold the CA that signed the controller's certificate",
			Run:    checkControllerReachable,
		},
		Check{
			ID: "CTRL-GEN-001", Title: "config generation current",
			Doc: "Compares the generation the controller serves for this node with the last good config the daemon saved in `state_dir` (controller-config.json) and with the generation the running daemon applied (`applied_generation` in /v1/status). " +
				"An older one means the node runs a config the controller has replaced: the daemon rejected the new one or cannot converge on it.",
			Remedy: "read the daemon's log and `last_error` in /v1/status (`roce-agent status`): a config the agent rejected (invalid, for another node) is logged with its reason and must be fixed in the controller; one it cannot apply shows which rail and why; a generation that just changed converges within a reconcile, so run diag again",
			Run:    checkConfigGeneration,
		},
		Check{
			ID: "AGENT-DAEMON-001", Title: "daemon healthy",
			Doc: "Asks the running daemon at `listen.metrics` for /healthz, /readyz and /v1/status. " +
				"A daemon whose loop is stuck or that never finished its first reconcile does not repair drift and reports stale conditions; diag works without a daemon and skips when none listens.",
			Remedy: "`systemctl status roce-agent` and `journalctl -u roce-agent`: a stuck loop needs a restart (and a bug report with the log); not ready means the first reconcile has not finished or the daemon waits for a desired state (no rails or qos in the config, or no config from the controller: CTRL-CONN-001)",
			Run:    checkDaemonHealthy,
		},
		Check{
			ID: "AGENT-COND-001", Title: "daemon conditions true",
			Doc:    "Reads the running daemon's conditions from /v1/status, each rail's and the node's: a False condition is a fault the daemon found and could not repair, an Unknown one a fact it could not establish.",
			Remedy: "act on the condition's reason and message; `roce-agent status` lists them per rail and the matching diag check (NIC-, ROCE-, QOS-, LLDP-) says more",
			Run:    checkDaemonConditions,
		},
	)
}

// requestFailure is why a request got no usable answer.
type requestFailure struct {
	// refused: nothing listens (connection refused).
	refused bool
	// timedOut: no answer within the timeout.
	timedOut bool
	// code is the HTTP status of an answer other than the one expected
	// (0: no answer).
	code int
	// msg is what the answer's body said, or the transport error.
	msg string
	err error
}

func (f *requestFailure) Error() string {
	switch {
	case f.code != 0 && f.msg != "":
		return fmt.Sprintf("HTTP %d: %s", f.code, f.msg)
	case f.code != 0:
		return fmt.Sprintf("HTTP %d %s", f.code, http.StatusText(f.code))
	}
	return f.msg
}

func (f *requestFailure) Unwrap() error { return f.err }

// requestTimeoutFor is the timeout of a request made under ctx: requestTimeout,
// or less when ctx ends sooner.
func requestTimeoutFor(ctx context.Context) time.Duration {
	d := requestTimeout
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < d {
			d = max(left, 0)
		}
	}
	return d.Round(time.Millisecond)
}

// httpGet sends one GET with the headers given and returns the answer's status
// and body (at most limit bytes). A transport failure is a
// *requestFailure.
func httpGet(ctx context.Context, client *http.Client, target string, header http.Header, limit int64) (int, http.Header, []byte, error) {
	timeout := requestTimeoutFor(ctx)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, target, nil)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("request %s: %w", target, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, transportFailure(err, timeout)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return resp.StatusCode, resp.Header, nil, transportFailure(fmt.Errorf("read the answer: %w", err), timeout)
	}
	if int64(len(body)) > limit {
		return resp.StatusCode, resp.Header, nil, &requestFailure{code: resp.StatusCode, msg: fmt.Sprintf("the answer is larger than %d MiB", limit>>20)}
	}
	return resp.StatusCode, resp.Header, body, nil
}

// transportFailure classifies a request that got no answer.
func transportFailure(err error, timeout time.Duration) *requestFailure {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err // without net/http's copy of the method and URL
	}
	var nerr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return &requestFailure{refused: true, msg: "connection refused", err: err}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return &requestFailure{timedOut: true, msg: fmt.Sprintf("did not answer within %s", timeout), err: err}
	}
	return &requestFailure{msg: err.Error(), err: err}
}

// answerMessage is what an error answer says: a v1.Error's message, else
// the first line of a short text body.
func answerMessage(body []byte) string {
	var e v1.Error
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		if e.Field != "" {
			return v1.Clip(e.Field + ": " + e.Error)
		}
		return v1.Clip(e.Error)
	}
	s := strings.TrimSpace(string(body))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 || strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0 {
		return ""
	}
	return s
}

// --- the controller ---

// ctrlConn is how diag asks the controller: the replicas' base URLs,
// the client with the agent's TLS settings, the token and the node's
// name.
type ctrlConn struct {
	bases  []string
	client *http.Client
	token  string
	node   string
	// clientCert: the node presents a client certificate.
	clientCert bool
}

// newCtrlConn prepares the requests from the config's controller
// section. The agent has no exported way to build its client, so this
// does what NewControllerSource does, with agent.ReadRegularFile.
func newCtrlConn(e *Env) (*ctrlConn, error) {
	// The agent's own reading of the settings: diag asks the controller
	// exactly as the daemon would.
	cred, err := e.Config.Controller.Credentials()
	if err != nil {
		return nil, err
	}
	node, err := agent.ControllerNodeName(e.Config)
	if err != nil {
		return nil, err
	}
	ctl := &ctrlConn{bases: cred.Bases, node: node, clientCert: len(cred.TLS.Certificates) > 0, token: cred.Token}
	ctl.client = controllerClient(e.HTTP, cred.TLS)
	return ctl, nil
}

// controllerClient is Env.HTTP (a fresh client when nil) with the
// controller's TLS settings on its transport, and the agent's redirect
// policy: the node's credentials never go to another host. A transport
// that is not an *http.Transport (a test's) is used as it is.
func controllerClient(base *http.Client, tlsConf *tls.Config) *http.Client {
	client := &http.Client{}
	if base != nil {
		*client = *base
	}
	switch tr := client.Transport.(type) {
	case nil:
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = tlsConf
		t.DisableKeepAlives = true
		client.Transport = t
	case *http.Transport:
		t := tr.Clone()
		t.TLSClientConfig = tlsConf
		client.Transport = t
	}
	client.CheckRedirect = agent.SameOriginRedirect
	return client
}

// configURL is a replica's URL of the node's config.
func (c *ctrlConn) configURL(base string) string {
	return base + "/v1/nodes/" + url.PathEscape(c.node) + "/config"
}

// fetch asks one replica for the node's config and checks it as the agent
// would before using it. A failure is a *requestFailure, or an error
// saying why the agent would reject the config.
func (c *ctrlConn) fetch(ctx context.Context, base string) (v1.NodeConfig, error) {
	h := http.Header{"Accept": {"application/json"}, "User-Agent": {"roce-agent-diag"}}
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
	var nc v1.NodeConfig
	code, _, body, err := httpGet(ctx, c.client, c.configURL(base), h, maxConfigBody)
	if err != nil {
		return nc, err
	}
	if code != http.StatusOK {
		return nc, &requestFailure{code: code, msg: answerMessage(body)}
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nc, errors.New("the answer is not a JSON object")
	}
	if err := json.Unmarshal(body, &nc); err != nil {
		return nc, fmt.Errorf("decode the config: %w", err)
	}
	switch {
	case nc.Node.Name != c.node:
		return nc, fmt.Errorf("the config (generation %d) is for node %s, this node is %s", nc.Generation, v1.Clip(nc.Node.Name), v1.Clip(c.node))
	case nc.Validate() != nil:
		return nc, fmt.Errorf("the config (generation %d) is invalid: %w", nc.Generation, nc.Validate())
	case nc.NoDesiredState() != "":
		return nc, fmt.Errorf("the config (generation %d) has no desired state: %s", nc.Generation, nc.NoDesiredState())
	}
	return nc, nil
}

// ctrlLocalMode is the result of a controller check without a controller.
func ctrlLocalMode() []Result {
	return []Result{SkipResult("controller", "local mode: controller.url is not set, the desired state comes from the config file")}
}

func checkControllerReachable(ctx context.Context, e *Env) []Result {
	if e.Config.Controller.URL == "" {
		return ctrlLocalMode()
	}
	ctl, err := newCtrlConn(e)
	if err != nil {
		return []Result{FailResult("controller", "unusable controller settings", "a controller section the agent can use", err.Error()).
			Remedied("fix the controller section of the agent's config (`roce-agent config check` says the same)")}
	}
	var out []Result
	for _, base := range ctl.bases {
		nc, err := ctl.fetch(ctx, base)
		if err == nil {
			out = append(out, PassResult(base, fmt.Sprintf("generation %d for node %s", nc.Generation, ctl.node)))
			continue
		}
		out = append(out, controllerFailure(base, ctl, err))
	}
	return out
}

// controllerFailure is the FAIL of a replica that did not serve the node's
// config.
func controllerFailure(base string, ctl *ctrlConn, err error) Result {
	expected := "HTTP 200 with node " + ctl.node + "'s config"
	var f *requestFailure
	if !errors.As(err, &f) {
		return FailResult(base, "HTTP 200, a config the agent rejects", expected, err.Error()+": the agent keeps its last good config").
			Remedied("fix the node's config in the controller")
	}
	observed := f.Error()
	switch {
	case f.code == http.StatusUnauthorized || f.code == http.StatusForbidden:
		why := "the controller refused the node's credentials"
		if ctl.token == "" {
			why += " (no controller.token_file is set)"
		}
		return FailResult(base, observed, expected, why)
	case f.code == http.StatusNotFound:
		return FailResult(base, observed, expected, fmt.Sprintf("the controller has no config for node %q (node.name, else the host name)", ctl.node))
	case f.code != 0:
		return FailResult(base, observed, expected, "the controller answered with an error")
	case f.refused:
		return FailResult(base, "connection refused", expected, "nothing listens at the controller's address")
	case f.timedOut:
		return FailResult(base, observed, expected, "the controller "+f.msg)
	}
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	var cerr x509.CertificateInvalidError
	if errors.As(err, &uerr) || errors.As(err, &herr) || errors.As(err, &cerr) {
		return FailResult(base, observed, expected, "the controller's certificate does not verify with controller.ca_file (or the system roots)")
	}
	// A TLS alert from the controller is a net.OpError "remote error".
	var oerr *net.OpError
	if errors.As(err, &oerr) && oerr.Op == "remote error" {
		return FailResult(base, observed, expected, "the controller refused the TLS handshake"+ctlCertHint(ctl))
	}
	return FailResult(base, observed, expected, "the request failed")
}

// ctlCertHint adds to a refused handshake what the node presented.
func ctlCertHint(ctl *ctrlConn) string {
	if !ctl.clientCert {
		return ": it may want a client certificate, and none is set (controller.cert_file, controller.key_file)"
	}
	return ": it does not accept the node's client certificate (controller.cert_file)"
}

// controllerGeneration is the generation the first replica that serves
// the node's config has, with the replica; an error when none does.
func controllerGeneration(ctx context.Context, e *Env) (int64, string, error) {
	ctl, err := newCtrlConn(e)
	if err != nil {
		return 0, "", err
	}
	var errs []error
	for _, base := range ctl.bases {
		nc, err := ctl.fetch(ctx, base)
		if err == nil {
			return nc.Generation, base, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", base, err))
	}
	return 0, "", errors.Join(errs...)
}

func checkConfigGeneration(ctx context.Context, e *Env) []Result {
	if e.Config.Controller.URL == "" {
		return ctrlLocalMode()
	}
	gen, base, err := controllerGeneration(ctx, e)
	if err != nil {
		return []Result{SkipResult("controller", "no generation from the controller to compare with (CTRL-CONN-001 says why): "+err.Error())}
	}
	want := fmt.Sprintf("generation %d (served by %s)", gen, base)
	var out []Result

	// The last good config the daemon saved.
	saved := filepath.Join(e.Config.StateDir, agent.ControllerFile)
	_, lg, err := agent.LastGoodConfig(e.Config)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		out = append(out, WarnResult("state_dir", "none", want,
			fmt.Sprintf("no last good config in %s: the daemon has not saved one (it never reached the controller, or never ran in controller mode), so plan and apply have nothing to use", saved)))
	case errors.Is(err, fs.ErrPermission):
		out = append(out, PrivilegeResult("state_dir", fmt.Sprintf("cannot read %s: %v", saved, err)))
	case err != nil:
		out = append(out, WarnResult("state_dir", "unusable", want, fmt.Sprintf("the saved config cannot be used: %v", err)))
	default:
		out = append(out, compareGeneration("state_dir", "the last good config saved in state_dir", lg.Config.Generation, gen, want))
	}

	// The running daemon's.
	d, res := newDaemonConn(e)
	if res != nil {
		return append(out, *res)
	}
	st, res := d.status(ctx)
	if res != nil {
		return append(out, *res)
	}
	r := compareGeneration("daemon", "the running daemon's applied generation", st.AppliedGeneration, gen, want)
	if r.Status != Pass && st.LastError != "" {
		r.Reason += "; its last error: " + st.LastError
	}
	return append(out, r)
}

// compareGeneration judges a generation against the controller's.
func compareGeneration(subject, what string, have, gen int64, want string) Result {
	observed := fmt.Sprintf("generation %d", have)
	switch {
	case have < gen:
		return WarnResult(subject, observed, want, fmt.Sprintf("%s is older than the controller's: the node runs a config the controller has replaced (rejected, or not converged yet)", what))
	case have > gen:
		return WarnResult(subject, observed, want, fmt.Sprintf("%s is newer than the controller's: the controller's store went back (restored from a backup?)", what))
	}
	return PassResult(subject, observed)
}

// --- the daemon ---

// daemonConn is how diag asks the running daemon.
type daemonConn struct {
	base   string
	client *http.Client
	// web: listen.web_config_file is set, so the daemon may serve TLS or
	// ask for credentials, which a plain GET does not give.
	web bool
}

// newDaemonConn prepares requests to listen.metrics: a wildcard address is
// asked on loopback. The result is the SKIP of a daemon that serves no
// HTTP.
func newDaemonConn(e *Env) (*daemonConn, *Result) {
	listen := e.Config.Listen.Metrics
	if listen == "" {
		r := SkipResult("daemon", "listen.metrics is empty: the daemon serves no HTTP endpoint to ask")
		return nil, &r
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		r := UnknownResult("daemon", fmt.Sprintf("listen.metrics %q is not host:port: %v", listen, err))
		return nil, &r
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	d := &daemonConn{base: "http://" + net.JoinHostPort(host, port), client: e.HTTP, web: e.Config.Listen.WebConfigFile != ""}
	if d.client == nil {
		d.client = &http.Client{Transport: &http.Transport{
			// The daemon is local: no proxy, and a short dial.
			DialContext:       (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			DisableKeepAlives: true,
		}}
	}
	return d, nil
}

// get asks the daemon for path; res is the result that says why there is
// no usable answer (a SKIP when nothing listens). code is the answer's
// status otherwise, with its body.
func (d *daemonConn) get(ctx context.Context, path string) (int, []byte, *Result) {
	code, _, body, err := httpGet(ctx, d.client, d.base+path, http.Header{"User-Agent": {"roce-agent-diag"}}, maxDaemonBody)
	if err != nil {
		var f *requestFailure
		if errors.As(err, &f) && f.refused {
			r := SkipResult("daemon", fmt.Sprintf("the daemon is not running (diag works without it): nothing listens on %s", strings.TrimPrefix(d.base, "http://")))
			return 0, nil, &r
		}
		why := fmt.Sprintf("GET %s%s: %v", d.base, path, err)
		if d.web {
			why += " (listen.web_config_file is set: the daemon may serve TLS, which diag does not ask over)"
		}
		r := UnknownResult("daemon", why)
		return 0, nil, &r
	}
	switch {
	case code == http.StatusBadRequest && bytes.Contains(body, []byte("HTTP request to an HTTPS server")):
		// A protected endpoint is not a fault: say so without raising the
		// exit status.
		r := SkipResult("daemon", fmt.Sprintf("the daemon at %s serves HTTPS (listen.web_config_file), which diag does not ask over: check it with curl and the web config's credentials", d.base))
		return 0, nil, &r
	case code == http.StatusUnauthorized:
		r := SkipResult("daemon", fmt.Sprintf("the daemon at %s asks for credentials (basic auth in listen.web_config_file), which diag does not send", d.base))
		return 0, nil, &r
	case code == http.StatusNotFound:
		r := UnknownResult("daemon", fmt.Sprintf("%s%s: HTTP 404: not a roce-agent daemon at listen.metrics?", d.base, path))
		return 0, nil, &r
	}
	return code, body, nil
}

// status reads /v1/status; res says why there is none: a SKIP when the
// daemon is not running or has no status yet.
func (d *daemonConn) status(ctx context.Context) (*v1.NodeStatus, *Result) {
	code, body, res := d.get(ctx, "/v1/status")
	if res != nil {
		return nil, res
	}
	switch code {
	case http.StatusOK:
	case http.StatusServiceUnavailable:
		r := SkipResult("daemon", "the daemon has no status yet: "+reasonOrNone(answerMessage(body)))
		return nil, &r
	default:
		r := UnknownResult("daemon", fmt.Sprintf("GET %s/v1/status: HTTP %d %s", d.base, code, answerMessage(body)))
		return nil, &r
	}
	var st v1.NodeStatus
	if err := json.Unmarshal(body, &st); err != nil {
		r := UnknownResult("daemon", fmt.Sprintf("GET %s/v1/status: decode: %v", d.base, err))
		return nil, &r
	}
	return &st, nil
}

func reasonOrNone(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}

func checkDaemonHealthy(ctx context.Context, e *Env) []Result {
	d, res := newDaemonConn(e)
	if res != nil {
		return []Result{*res}
	}
	for _, probe := range []struct{ path, what string }{{"/healthz", "healthy"}, {"/readyz", "ready"}} {
		code, body, res := d.get(ctx, probe.path)
		switch {
		case res != nil:
			return []Result{*res}
		case code == http.StatusServiceUnavailable:
			return []Result{FailResult("daemon", fmt.Sprintf("%s: HTTP 503", probe.path), probe.what,
				fmt.Sprintf("the daemon is not %s: %s", probe.what, reasonOrNone(answerMessage(body))))}
		case code != http.StatusOK:
			return []Result{UnknownResult("daemon", fmt.Sprintf("GET %s%s: HTTP %d %s", d.base, probe.path, code, answerMessage(body)))}
		}
	}
	st, res := d.status(ctx)
	if res != nil {
		if res.Status == Skip { // not running any more, or not ready after all
			res.Status = Unknown
		}
		return []Result{*res}
	}
	observed := fmt.Sprintf("version %s, applied generation %d", st.Version, st.AppliedGeneration)
	if !st.LastReconcile.IsZero() {
		observed += fmt.Sprintf(", last reconcile %s ago", e.now().Sub(st.LastReconcile).Round(time.Second))
	}
	if st.LastError != "" {
		return []Result{WarnResult("daemon", observed, "no reconcile error", "the daemon is ready but its last reconcile failed: "+st.LastError).
			Remedied("read `last_error` and the daemon's log (`journalctl -u roce-agent`); AGENT-COND-001 shows the rail that failed")}
	}
	return []Result{PassResult("daemon", observed)}
}

func checkDaemonConditions(ctx context.Context, e *Env) []Result {
	d, res := newDaemonConn(e)
	if res != nil {
		return []Result{*res}
	}
	st, res := d.status(ctx)
	if res != nil {
		return []Result{*res}
	}
	var out []Result
	for _, r := range st.Rails {
		subject := railSubject(r.Netdev, r.RDMADevice)
		rs := judgeConditions(subject, r.Conditions)
		for i := range rs {
			rs[i] = rs[i].OnRail(r.Rail)
		}
		out = append(out, rs...)
	}
	out = append(out, judgeConditions("node", st.Conditions)...)
	return out
}

// judgeConditions is one result per condition that is False (FAIL) or
// Unknown (WARN), else one PASS for the subject.
// benignUnknown are the reasons of Unknown conditions that say the
// condition does not apply on this host or has not been looked at yet
// (no GPU, no qos section, NVML off, no peers, no probe yet): not faults.
var benignUnknown = map[string]bool{
	"NoGPU": true, "NotConfigured": true, "NotQueried": true, "NotManaged": true, "NotChecked": true,
	"NoPeers": true, "NotProbed": true, "NotProbedYet": true, "NoPCIDevice": true,
}

func judgeConditions(subject string, conds []v1.Condition) []Result {
	var out []Result
	ok, unsupported := 0, 0
	var unknown []string
	for _, c := range conds {
		observed := fmt.Sprintf("%s=%s (%s)", c.Type, c.Status, c.Reason)
		why := c.Message
		if why == "" {
			why = c.Reason
		}
		why = reasonOrNone(why)
		switch c.Status {
		case v1.StatusTrue:
			ok++
		case v1.StatusUnsupported:
			unsupported++
		case v1.StatusFalse:
			out = append(out, withConditionRemedy(FailResult(subject, observed, string(c.Type)+"=True", why), c.Type))
		default:
			if benignUnknown[c.Reason] {
				// The condition does not apply here, or the daemon has
				// not looked yet: listed, not a warning.
				unknown = append(unknown, fmt.Sprintf("%s (%s)", c.Type, c.Reason))
				continue
			}
			out = append(out, withConditionRemedy(WarnResult(subject, observed, string(c.Type)+"=True", why), c.Type))
		}
	}
	if len(out) > 0 {
		return out
	}
	if len(conds) == 0 {
		return []Result{PassResult(subject, "no conditions reported")}
	}
	observed := fmt.Sprintf("%d conditions True", ok)
	if unsupported > 0 {
		observed += fmt.Sprintf(", %d Unsupported", unsupported)
	}
	res := PassResult(subject, observed)
	if len(unknown) > 0 {
		res.Observed += fmt.Sprintf(", %d Unknown", len(unknown))
		res.Reason = "Unknown: " + strings.Join(unknown, ", ")
	}
	return []Result{res}
}

// conditionRemedies point a condition at what to do about it.
var conditionRemedies = map[v1.ConditionType]string{
	v1.ConditionLinkUp:              "check the cable, optic and leaf port, and that the netdev is up (NIC-PORT-001)",
	v1.ConditionAddressesReady:      "the rail's address could not be set: the message names the conflict (an address owned by someone else, a missing netdev)",
	v1.ConditionMTUReady:            "the rail's MTU differs from link.mtu: the NIC or its parent device may cap it (`ip -d link show <netdev>`)",
	v1.ConditionRoutingReady:        "the rail's policy routing (rules, routes) is not in place: see the message and `ip rule`, `ip route show table all`",
	v1.ConditionGIDReady:            "the rail's address has no RoCE v2 GID: check the netdev is the NIC's own (not a bond or VLAN the NIC does not see)",
	v1.ConditionQoSReady:            "the NIC's DCB (trust, PFC, ETS) does not match the qos profile: see QOS-* and the message",
	v1.ConditionDCQCNReady:          "DCQCN (ECN congestion control) is not set as the profile says: see QOS-* and the message",
	v1.ConditionPCIeLinkOK:          "the NIC's PCIe link trained below its capability: reseat the card or check the riser (PCIE-* checks)",
	v1.ConditionGPUAffinityOK:       "the rail's NIC is far from its GPUs (across the CPU interconnect): check the pins and the PCIe topology (GPU-* checks)",
	v1.ConditionPeerReachable:       "a peer on the rail did not answer the RDMA probe: check the peer, the leaf and routing between the rails",
	v1.ConditionBandwidthOK:         "the probe's bandwidth to a peer is below the floor: check the link (CNT-LINK-001), PFC (CNT-PFC-001) and the peer",
	v1.ConditionCablingOK:           "the rail is not cabled to its planned leaf port: see LLDP-* and fix the cabling or the plan",
	v1.ConditionNVMLReady:           "NVML could not be used: check the NVIDIA driver (`nvidia-smi`)",
	v1.ConditionPeerMemReady:        "GPUDirect RDMA needs nvidia-peermem (or dma-buf): `modprobe nvidia-peermem` (GPU-* checks)",
	v1.ConditionControllerConnected: "the daemon lost the controller: see CTRL-CONN-001",
}

func withConditionRemedy(r Result, t v1.ConditionType) Result {
	if remedy, ok := conditionRemedies[t]; ok {
		return r.Remedied(remedy)
	}
	return r
}
