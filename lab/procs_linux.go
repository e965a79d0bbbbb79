package lab

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
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// Binaries the processes run, looked up in ProcessOptions.BinDir.
const (
	AgentBinary      = "roce-agent"
	ControllerBinary = "roce-controller"
)

// Defaults of ProcessOptions and the lab's identities.
const (
	DefaultControllerPort = 8443
	// AgentPort is where each agent serves /metrics, /healthz, /readyz
	// and /v1/status, on its management address.
	AgentPort = 9487
	// AdminName is the admin identity (client certificate name) of the
	// lab.
	AdminName = "admin"
	// ProbeAPIPort is where each agent serves the peer probe API
	// (listen.probe_api ":9488"): the agent answers only on its rails'
	// addresses, so peers reach it over the rails, through the tenant's
	// leaf namespaces.
	ProbeAPIPort = 9488
	// DefaultProbeInterval is the agents' probes.interval in the lab.
	DefaultProbeInterval = 10 * time.Second
	// LLDPCheckInterval is the agents' lldp.interval in the lab (the
	// shortest they take): how often they read their rails' LLDP
	// neighbours from the host namespace's lldpd and check the cabling.
	LLDPCheckInterval = 5 * time.Second
)

// Probe settings of the lab's agents besides the interval: each rail
// probes up to two peers a round (every peer in the default plan, whose
// rails have at most two others), a probe may take 5 s (the fake tools
// take well under one), and the bandwidth bar is 0.1% of the fixture's
// 400 Gb/s port rate: the fake ib_write_bw plays a soft-RoCE capture of
// 1.06 Gb/s, which says nothing about the rate (docs/lab.md).
const (
	probePeersPerInterval  = 2
	probeTimeout           = 5 * time.Second
	probeMinFractionOfRate = 0.001
)

// Files `roce-controller certs` writes in its directory (a client NAME
// gets NAME.pem and NAME-key.pem).
const (
	caCertFile     = "ca.pem"
	serverCertFile = "server.pem"
	serverKeyFile  = "server-key.pem"
)

// ProcessOptions configure Start.
type ProcessOptions struct {
	// BinDir holds roce-controller and roce-agent.
	BinDir string
	// ControllerPort is the controller's HTTPS port on its management
	// address; default DefaultControllerPort.
	ControllerPort int
	// LogLevel is the agents' log level (debug, info, warn, error);
	// default info.
	LogLevel string
	// Detach lets the processes outlive this one (no parent-death
	// signal), for roce-lab --keep; Cleanup stops them.
	Detach bool
	// Logger reports process exits; nil discards.
	Logger *slog.Logger
	// EtcdMembers > 0 runs an etcd cluster of that many members
	// (roce-controller etcd-member, in the management namespace) for the
	// controllers instead of the embedded member.
	EtcdMembers int
	// Replicas is the number of controller replicas (default 1; more
	// need EtcdMembers): "controller" on ControllerPort, "controller-<i>"
	// on ControllerPort+i. Agents list every replica in controller.url.
	Replicas int
	// ProbeInterval is the agents' probes.interval: every interval each
	// bound rail probes its peers (the same rail of the tenant's other
	// members, as the controller lists them) with the lab's fake tools,
	// over the rails and with mTLS (docs/lab.md). Default
	// DefaultProbeInterval; the agents take 5s-24h. Negative runs no
	// scheduled probes: the probe API still serves peers and roce-agent
	// probe works.
	ProbeInterval time.Duration
}

// etcdBasePort is the first etcd member's client port (peer: +100).
const etcdBasePort = 23790

// Processes are the controller and the agents Start runs for a Fabric:
// roce-controller serve in the management namespace, one roce-agent run
// per host namespace, with mTLS between them.
type Processes struct {
	f     *Fabric
	o     ProcessOptions
	certs Certs
	url   string
	urls  []string // every replica's; url is the first
	admin *http.Client
	plain *http.Client
	mu    sync.Mutex
	procs []*proc // the controller first
	exits chan ProcessExit
	// stopping: Stop has begun, exits are expected.
	stopping atomic.Bool
	logger   *slog.Logger
}

// Certs are the lab's certificate files, written by roce-controller certs.
type Certs struct {
	Dir                   string
	CA                    string
	ServerCert, ServerKey string
	AdminCert, AdminKey   string
}

// NodeCert is the client certificate and key of a node.
func (c Certs) NodeCert(node string) (cert, key string) {
	return filepath.Join(c.Dir, node+".pem"), filepath.Join(c.Dir, node+"-key.pem")
}

// ProcessExit reports a process that ended.
type ProcessExit struct {
	// Name is "controller" or the node name.
	Name string
	Err  error
	Log  string
}

type proc struct {
	name string
	ns   string
	args []string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
	// expected: Kill stopped it; its exit is not reported.
	expected atomic.Bool
}

// Start writes the certificates (roce-controller certs), the plan, the
// controller's data dir and each agent's config under the work dir,
// starts the controller and waits until it answers, then starts the
// agents. If it fails, it stops what it started.
func (f *Fabric) Start(ctx context.Context, o ProcessOptions) (_ *Processes, err error) {
	if o.ControllerPort == 0 {
		o.ControllerPort = DefaultControllerPort
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	bin, err := filepath.Abs(o.BinDir)
	if err != nil {
		return nil, fmt.Errorf("bin dir: %w", err)
	}
	o.BinDir = bin
	if err := CheckBinaries(bin); err != nil {
		return nil, err
	}
	for _, h := range f.hosts {
		switch h.node.Name {
		case AdminName, "ca", "server":
			return nil, fmt.Errorf("node %s: the name is taken by a certificate of the lab (%s, ca, server)", h.node.Name, AdminName)
		}
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Replicas > 1 && o.EtcdMembers == 0 {
		return nil, errors.New("controller replicas need an etcd cluster (EtcdMembers)")
	}
	switch {
	case o.ProbeInterval == 0:
		o.ProbeInterval = DefaultProbeInterval
	case o.ProbeInterval > 0 && (o.ProbeInterval < 5*time.Second || o.ProbeInterval > 24*time.Hour):
		return nil, fmt.Errorf("probe interval %s: the agents take 5s-24h (negative: no scheduled probes)", o.ProbeInterval)
	}
	p := &Processes{f: f, o: o, exits: make(chan ProcessExit, len(f.hosts)+o.Replicas+o.EtcdMembers), logger: logger}
	for i := 0; i < o.Replicas; i++ {
		p.urls = append(p.urls, "https://"+net.JoinHostPort(f.ControllerAddr().String(), strconv.Itoa(o.ControllerPort+i)))
	}
	p.url = p.urls[0]
	defer func() {
		if err != nil {
			_ = p.Stop()
		}
	}()
	f.mu.Lock()
	err = p.writeFiles()
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := p.makeCerts(ctx); err != nil {
		return nil, err
	}
	if p.admin, err = p.client(p.certs.AdminCert, p.certs.AdminKey); err != nil {
		return nil, err
	}
	p.plain = &http.Client{Transport: &http.Transport{DialContext: f.DialContext}, Timeout: 5 * time.Second}
	if err := p.startEtcd(); err != nil {
		return nil, err
	}
	if err := p.startController(); err != nil {
		return nil, err
	}
	if err := p.waitController(ctx, time.Minute); err != nil {
		return nil, err
	}
	for i := range f.hosts {
		if err := p.startAgent(i); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// CheckBinaries reports a bin dir without an executable roce-controller
// and roce-agent.
func CheckBinaries(binDir string) error {
	for _, b := range []string{ControllerBinary, AgentBinary} {
		if st, err := os.Stat(filepath.Join(binDir, b)); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("no executable %s in %s (go build -o %s ./cmd/roce-controller ./cmd/roce-agent)", b, binDir, binDir)
		}
	}
	return nil
}

// writeFiles writes the plan and makes the directories.
func (p *Processes) writeFiles() error {
	f := p.f
	plan, err := json.MarshalIndent(f.plan, "", "  ")
	if err != nil {
		return fmt.Errorf("encode plan: %w", err)
	}
	if err := f.writeFile(filepath.Join("controller", "plan.json"), append(plan, '\n')); err != nil {
		return err
	}
	for _, d := range []string{filepath.Join("controller", "data"), "logs", "certs"} {
		if _, err := f.mkdir(d); err != nil {
			return err
		}
	}
	return nil
}

// makeCerts runs roce-controller certs: a CA, the controller's server
// certificate for its management address, a client certificate per node
// and the admin's.
func (p *Processes) makeCerts(ctx context.Context) error {
	dir := p.f.path("certs")
	names := make([]string, 0, len(p.f.hosts)+1)
	for _, h := range p.f.hosts {
		names = append(names, h.node.Name)
	}
	names = append(names, AdminName)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(p.o.BinDir, ControllerBinary), "certs",
		"--dir", dir, "--server-host", p.f.ControllerAddr().String(), "--names", strings.Join(names, ","))
	cmd.Env = childEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("roce-controller certs: %w: %s", err, lastLines(string(out), 5))
	}
	c := Certs{
		Dir: dir, CA: filepath.Join(dir, caCertFile),
		ServerCert: filepath.Join(dir, serverCertFile), ServerKey: filepath.Join(dir, serverKeyFile),
	}
	c.AdminCert, c.AdminKey = c.NodeCert(AdminName)
	need := []string{c.CA, c.ServerCert, c.ServerKey, c.AdminCert, c.AdminKey}
	for _, n := range names {
		cert, key := c.NodeCert(n)
		need = append(need, cert, key)
	}
	for _, file := range need {
		if _, err := os.Stat(file); err != nil {
			return fmt.Errorf("roce-controller certs did not write %s: %w", filepath.Base(file), err)
		}
	}
	p.certs = c
	return nil
}

// client is an HTTPS client with a client certificate that dials from
// the management namespace.
func (p *Processes) client(cert, key string) (*http.Client, error) {
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("load client certificate: %w", err)
	}
	caPEM, err := os.ReadFile(p.certs.CA)
	if err != nil {
		return nil, fmt.Errorf("read ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("ca %s: no certificate", p.certs.CA)
	}
	tr := &http.Transport{
		DialContext:     p.f.DialContext,
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
	}
	return &http.Client{Transport: tr, Timeout: 40 * time.Second}, nil
}

// childEnv is this process's environment without ROCE_AGENT_* variables,
// which would override the agents' config files.
func childEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "ROCE_AGENT_") {
			env = append(env, e)
		}
	}
	return env
}

// start runs a command in a namespace.
// Equivalent to: ip netns exec $ns $bin $args > logs/$name.log 2>&1
func (p *Processes) start(name, ns string, args ...string) error {
	logFile := p.f.path("logs", name+".log")
	out, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", name, err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdout, cmd.Stderr, cmd.Env = out, out, childEnv()
	// Its own process group: a terminal's Ctrl-C reaches roce-lab only,
	// which stops the processes in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !p.o.Detach {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
	}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	pr := &proc{name: name, ns: ns, args: args, cmd: cmd, log: logFile, done: make(chan struct{})}
	p.mu.Lock()
	replaced := false
	for i, old := range p.procs {
		if old.name == name {
			p.procs[i], replaced = pr, true
		}
	}
	if !replaced {
		p.procs = append(p.procs, pr)
	}
	p.mu.Unlock()
	go func() {
		pr.err = cmd.Wait()
		out.Close()
		close(pr.done)
		if p.stopping.Load() || pr.expected.Load() {
			p.logger.Info("process stopped", "process", name)
			return
		}
		p.logger.Warn("process exited", "process", name, "err", pr.err, "log", logFile)
		select {
		case p.exits <- ProcessExit{Name: name, Err: pr.err, Log: logFile}:
		default:
		}
	}()
	return nil
}

func (p *Processes) startController() error {
	for i := 0; i < p.o.Replicas; i++ {
		name := "controller"
		if i > 0 {
			name = fmt.Sprintf("controller-%d", i)
		}
		if err := p.start(name, p.f.MgmtNS(), p.controllerArgs(i)...); err != nil {
			return err
		}
	}
	return nil
}

// controllerArgs is replica i's command line.
func (p *Processes) controllerArgs(i int) []string {
	c := p.certs
	args := []string{filepath.Join(p.o.BinDir, ControllerBinary), "serve",
		"--listen", net.JoinHostPort(p.f.ControllerAddr().String(), strconv.Itoa(p.o.ControllerPort+i)),
		"--plan", p.f.path("controller", "plan.json"),
		"--tls-cert", c.ServerCert, "--tls-key", c.ServerKey, "--client-ca", c.CA,
		"--admin", AdminName}
	if p.o.EtcdMembers == 0 {
		return append(args, "--data-dir", p.f.path("controller", "data"))
	}
	var eps []string
	for m := 0; m < p.o.EtcdMembers; m++ {
		eps = append(eps, "http://"+net.JoinHostPort(p.f.ControllerAddr().String(), strconv.Itoa(etcdBasePort+m)))
	}
	return append(args, "--etcd-endpoints", strings.Join(eps, ","))
}

// startEtcd starts the etcd members, when asked for, named etcd-<i>.
func (p *Processes) startEtcd() error {
	if p.o.EtcdMembers == 0 {
		return nil
	}
	host := p.f.ControllerAddr().String()
	var cluster []string
	for m := 0; m < p.o.EtcdMembers; m++ {
		cluster = append(cluster, fmt.Sprintf("m%d=http://%s", m, net.JoinHostPort(host, strconv.Itoa(etcdBasePort+100+m))))
	}
	for m := 0; m < p.o.EtcdMembers; m++ {
		p.f.mu.Lock()
		dir, err := p.f.mkdir(filepath.Join("controller", fmt.Sprintf("etcd-%d", m)))
		p.f.mu.Unlock()
		if err != nil {
			return err
		}
		if err := p.start(fmt.Sprintf("etcd-%d", m), p.f.MgmtNS(), filepath.Join(p.o.BinDir, ControllerBinary), "etcd-member",
			"--name", fmt.Sprintf("m%d", m), "--data-dir", dir,
			"--listen-client", "http://"+net.JoinHostPort(host, strconv.Itoa(etcdBasePort+m)),
			"--listen-peer", "http://"+net.JoinHostPort(host, strconv.Itoa(etcdBasePort+100+m)),
			"--initial-cluster", strings.Join(cluster, ",")); err != nil {
			return err
		}
	}
	return nil
}

// agentConfig is the agent's config file, as the lab writes it.
type agentConfig struct {
	Node struct {
		Name string `yaml:"name"`
	} `yaml:"node"`
	SysfsRoot string `yaml:"sysfs_root"`
	StateDir  string `yaml:"state_dir"`
	Listen    struct {
		Metrics  string `yaml:"metrics"`
		ProbeAPI string `yaml:"probe_api"`
	} `yaml:"listen"`
	Log struct {
		Format string `yaml:"format"`
		Level  string `yaml:"level"`
	} `yaml:"log"`
	Controller struct {
		URL      string `yaml:"url"`
		CAFile   string `yaml:"ca_file"`
		CertFile string `yaml:"cert_file"`
		KeyFile  string `yaml:"key_file"`
	} `yaml:"controller"`
	Probes struct {
		Interval          string  `yaml:"interval"`
		PeersPerInterval  int     `yaml:"peers_per_interval"`
		MinFractionOfRate float64 `yaml:"min_fraction_of_rate"`
		Timeout           string  `yaml:"timeout"`
		ToolsDir          string  `yaml:"tools_dir"`
	} `yaml:"probes"`
	LLDP struct {
		Source   string `yaml:"source"`
		Socket   string `yaml:"socket,omitempty"`
		Interval string `yaml:"interval,omitempty"`
	} `yaml:"lldp"`
}

// AgentConfig is the path of host i's agent config file.
func (p *Processes) AgentConfig(host int) string {
	return p.f.path("hosts", p.f.hosts[host].node.Name, "agent.yaml")
}

// ToolsDir is host i's probes.tools_dir: the fake probe tools
// (WriteFakeTools) for its sysfs tree.
func (p *Processes) ToolsDir(host int) string {
	return p.f.path("hosts", p.f.hosts[host].node.Name, "tools")
}

// ProbeInterval is the agents' probes.interval (0: no scheduled probes).
func (p *Processes) ProbeInterval() time.Duration { return max(p.o.ProbeInterval, 0) }

func (p *Processes) startAgent(i int) error {
	h := p.f.hosts[i]
	var c agentConfig
	c.Node.Name = h.node.Name
	c.SysfsRoot = h.sysfs
	c.StateDir = p.f.path("hosts", h.node.Name, "state")
	c.Listen.Metrics = net.JoinHostPort(p.f.MgmtAddr(i).String(), strconv.Itoa(AgentPort))
	c.Log.Format, c.Log.Level = "text", p.o.LogLevel
	c.Controller.URL, c.Controller.CAFile = strings.Join(p.urls, ","), p.certs.CA
	c.Controller.CertFile, c.Controller.KeyFile = p.certs.NodeCert(h.node.Name)
	// Peers reach the probe API over the rails, with the nodes'
	// certificates (mTLS); the tools are the lab's fakes.
	c.Listen.ProbeAPI = ":" + strconv.Itoa(ProbeAPIPort)
	c.Probes.Interval = p.ProbeInterval().String()
	c.Probes.PeersPerInterval = probePeersPerInterval
	c.Probes.MinFractionOfRate = probeMinFractionOfRate
	c.Probes.Timeout = probeTimeout.String()
	c.Probes.ToolsDir = p.ToolsDir(i)
	// The cabling check reads the host namespace's lldpd (never the
	// machine's own, at lldpd's default socket); without one it is off.
	c.LLDP.Source = "off"
	if sock := p.f.LLDPSocket(i); sock != "" {
		c.LLDP.Source, c.LLDP.Socket, c.LLDP.Interval = "lldpctl", sock, LLDPCheckInterval.String()
	}
	if err := WriteFakeTools(c.Probes.ToolsDir, h.sysfs); err != nil {
		return err
	}
	data, err := yaml.Marshal(&c)
	if err != nil {
		return fmt.Errorf("encode agent config of %s: %w", h.node.Name, err)
	}
	p.f.mu.Lock()
	err = p.f.writeFile(filepath.Join("hosts", h.node.Name, "agent.yaml"), data)
	p.f.mu.Unlock()
	if err != nil {
		return err
	}
	return p.start(h.node.Name, p.f.HostNS(i), filepath.Join(p.o.BinDir, AgentBinary), "--config", p.AgentConfig(i), "run")
}

// waitController waits until the controller answers GET /v1/nodes.
func (p *Processes) waitController(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for {
		var nl v1.NodeList
		if last = p.adminGet(ctx, "/v1/nodes", &nl); last == nil {
			return nil
		}
		if err := p.exitedErr(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the controller at %s: %w (last: %w)", p.url, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// exitedErr reports a process that has ended, with the end of its log.
func (p *Processes) exitedErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.procs {
		if pr.expected.Load() {
			continue // stopped by Kill
		}
		select {
		case <-pr.done:
			return fmt.Errorf("%s exited (%w); its log %s ends:\n%s", pr.name, exitErr(pr.err), pr.log, tail(pr.log, 8))
		default:
		}
	}
	return nil
}

func exitErr(err error) error {
	if err == nil {
		return errors.New("status 0")
	}
	return err
}

// tail is the last n lines of a file.
func tail(file string, n int) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	return lastLines(string(data), n)
}

// adminGet GETs a controller path as the admin and decodes the JSON body.
func (p *Processes) adminGet(ctx context.Context, path string, out any) error {
	return getJSON(ctx, p.admin, p.url+path, out)
}

func getJSON(ctx context.Context, c *http.Client, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return &httpError{url: url, code: resp.StatusCode, body: strings.TrimSpace(string(body))}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode %s: %w", url, err)
	}
	return nil
}

type httpError struct {
	url  string
	code int
	body string
}

func (e *httpError) Error() string {
	return fmt.Sprintf("GET %s: %d %s", e.url, e.code, v1.Clip(e.body))
}

// Exited delivers each process that ends.
func (p *Processes) Exited() <-chan ProcessExit { return p.exits }

// ControllerURL is the controller's base URL (reachable from the
// management namespace).
func (p *Processes) ControllerURL() string { return p.url }

// ControllerURLs are every replica's URL, "controller" first.
func (p *Processes) ControllerURLs() []string { return append([]string(nil), p.urls...) }

// Certs are the lab's certificate files.
func (p *Processes) Certs() Certs { return p.certs }

// AdminClient is an HTTPS client with the admin certificate that dials
// from the management namespace.
func (p *Processes) AdminClient() *http.Client { return p.admin }

// LogFile is the log of "controller" or a node.
func (p *Processes) LogFile(name string) string { return p.f.path("logs", name+".log") }

// AgentURL is host i's agent endpoint (/metrics, /v1/status).
func (p *Processes) AgentURL(host int) string {
	return "http://" + net.JoinHostPort(p.f.MgmtAddr(host).String(), strconv.Itoa(AgentPort))
}

// AgentStatus fetches host i's /v1/status.
func (p *Processes) AgentStatus(ctx context.Context, host int) (v1.NodeStatus, error) {
	var st v1.NodeStatus
	err := getJSON(ctx, p.plain, p.AgentURL(host)+"/v1/status", &st)
	return st, err
}

// WaitConverged waits until every agent reports, on /v1/status, every
// rail with LinkUp, MTUReady, AddressesReady and RoutingReady True
// (GIDReady and the node's ControllerConnected too when reported) and
// bound to its tenant of the plan the leaves follow. A process that ends
// meanwhile is an error.
func (p *Processes) WaitConverged(ctx context.Context) error {
	return p.poll(ctx, "the agents to converge", 250*time.Millisecond, func() string {
		plan := p.f.Plan()
		want := p.f.placement(plan)
		for i := range p.f.hosts {
			st, err := p.AgentStatus(ctx, i)
			if err != nil {
				return fmt.Sprintf("%s: %v", p.f.Node(i), err)
			}
			if why := notConverged(st, plan.Rails, want[i]); why != "" {
				return p.f.Node(i) + ": " + why
			}
		}
		return ""
	})
}

// poll calls check every interval until it says nothing is missing (""),
// a lab process exits, or ctx ends (the error names what and the last
// check's answer).
func (p *Processes) poll(ctx context.Context, what string, every time.Duration, check func() string) error {
	for {
		why := check()
		if why == "" {
			return nil
		}
		if err := p.exitedErr(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w; still: %s", what, ctx.Err(), why)
		case <-time.After(every):
		}
	}
}

// WaitCablingChecked waits until every agent's every rail has a CablingOK
// verdict (True or False, from its LLDP neighbour), or ctx ends. An
// agent reads its neighbours in the background every lldp.interval, so
// the first verdict may come that long after convergence.
func (p *Processes) WaitCablingChecked(ctx context.Context) error {
	return p.poll(ctx, "the cabling checks", 500*time.Millisecond, func() string {
		for i := range p.f.hosts {
			st, err := p.AgentStatus(ctx, i)
			if err != nil {
				return fmt.Sprintf("%s: %v", p.f.Node(i), err)
			}
			for _, r := range st.Rails {
				if !slices.ContainsFunc(r.Conditions, func(c v1.Condition) bool {
					return c.Type == v1.ConditionCablingOK && (c.Status == v1.StatusTrue || c.Status == v1.StatusFalse)
				}) {
					return fmt.Sprintf("%s rail %d: no CablingOK verdict yet", p.f.Node(i), r.Rail)
				}
			}
		}
		return ""
	})
}

// notConverged says why a node status is not converged ("" when it is).
func notConverged(st v1.NodeStatus, rails int, tenants []string) string {
	for _, c := range st.Conditions {
		if c.Type == v1.ConditionControllerConnected && c.Status != v1.StatusTrue {
			return fmt.Sprintf("%s is %s (%s)", c.Type, c.Status, c.Reason)
		}
	}
	byRail := map[int]v1.RailStatus{}
	for _, r := range st.Rails {
		byRail[r.Rail] = r
	}
	for n := 0; n < rails; n++ {
		r, ok := byRail[n]
		if !ok {
			return fmt.Sprintf("rail %d not reported", n)
		}
		got := map[v1.ConditionType]v1.Condition{}
		for _, c := range r.Conditions {
			got[c.Type] = c
		}
		for _, t := range []v1.ConditionType{v1.ConditionLinkUp, v1.ConditionMTUReady, v1.ConditionAddressesReady, v1.ConditionRoutingReady, v1.ConditionGIDReady} {
			c, ok := got[t]
			if !ok && t != v1.ConditionGIDReady {
				return fmt.Sprintf("rail %d has no %s", n, t)
			}
			if ok && c.Status != v1.StatusTrue {
				return fmt.Sprintf("rail %d %s is %s (%s)", n, t, c.Status, c.Reason)
			}
		}
		bound := ""
		if r.Tenant != nil {
			bound = r.Tenant.ID
		}
		if bound != tenants[n] {
			return fmt.Sprintf("rail %d is bound to %q, the plan says %q", n, bound, tenants[n])
		}
	}
	return ""
}

// TenantHealth fetches GET /v1/tenants/{tenant}/health as the admin.
func (p *Processes) TenantHealth(ctx context.Context, tenant string) (v1.TenantHealth, error) {
	var th v1.TenantHealth
	err := p.adminGet(ctx, "/v1/tenants/"+tenant+"/health", &th)
	return th, err
}

// ControllerPlan rebuilds the tenant membership the controller serves
// now, from every node's config (GET /v1/nodes/{node}/config as the
// admin: rail n of a node in tenant T makes GPU n a member of T), on top
// of the lab's plan.
func (p *Processes) ControllerPlan(ctx context.Context) (v1.FabricPlan, error) {
	plan := p.f.Plan()
	type tenant struct {
		t    v1.Tenant
		gpus map[string][]int
	}
	found := map[string]*tenant{}
	for _, n := range plan.Nodes {
		var cfg v1.NodeConfig
		if err := p.adminGet(ctx, "/v1/nodes/"+n.Name+"/config", &cfg); err != nil {
			return v1.FabricPlan{}, err
		}
		for _, r := range cfg.Rails {
			if r.Rail == nil || r.Tenant == nil || r.Tenant.ID == "" {
				continue
			}
			t := found[r.Tenant.ID]
			if t == nil {
				t = &tenant{t: v1.Tenant{ID: r.Tenant.ID, VRF: r.Tenant.VRF, VNI: r.Tenant.VNI}, gpus: map[string][]int{}}
				found[r.Tenant.ID] = t
			}
			t.gpus[n.Name] = append(t.gpus[n.Name], *r.Rail)
		}
	}
	// Keep the plan's tenant order, new tenants after, by ID.
	var order []string
	for _, t := range plan.Tenants {
		if found[t.ID] != nil {
			order = append(order, t.ID)
		}
	}
	var extra []string
	for id := range found {
		if !contains(order, id) {
			extra = append(extra, id)
		}
	}
	sort.Strings(extra)
	plan.Tenants = nil
	for _, id := range append(order, extra...) {
		t := found[id]
		for _, n := range plan.Nodes {
			if g := t.gpus[n.Name]; len(g) > 0 {
				sort.Ints(g)
				t.t.Members = append(t.t.Members, v1.TenantMember{Node: n.Name, GPUs: g})
			}
		}
		plan.Tenants = append(plan.Tenants, t.t)
	}
	return plan, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Follow keeps the leaves on the controller's tenants, as a fabric's own
// controller would after POST /v1/moves or PUT /v1/tenants: every
// interval it rebuilds the membership (ControllerPlan) and, when a rail's
// tenant or a VNI changed, calls Sync. It returns when ctx ends.
func (p *Processes) Follow(ctx context.Context, interval time.Duration) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
		plan, err := p.ControllerPlan(ctx)
		if err != nil {
			if ctx.Err() == nil {
				p.logger.Warn("leaves cannot follow the controller", "err", err)
			}
			continue
		}
		cur := p.f.Plan()
		changes := planChanges(p.f, cur, plan)
		if len(changes) == 0 {
			continue
		}
		if err := p.f.Sync(plan); err != nil {
			p.logger.Error("leaves did not follow the controller", "err", err)
			continue
		}
		p.logger.Info("leaves follow the controller", "changes", strings.Join(changes, "; "))
	}
}

// planChanges lists the rails whose tenant differs between two plans, and
// the tenants whose VNI does.
func planChanges(f *Fabric, a, b v1.FabricPlan) []string {
	wa, wb := f.placement(a), f.placement(b)
	var out []string
	for i := range wa {
		for r := range wa[i] {
			if wa[i][r] != wb[i][r] {
				out = append(out, fmt.Sprintf("%s rail %d %s -> %s", f.Node(i), r, orNone(wa[i][r]), orNone(wb[i][r])))
			}
		}
	}
	vni := map[string]int{}
	for _, t := range a.Tenants {
		vni[t.ID] = t.VNI
	}
	for _, t := range b.Tenants {
		if v, ok := vni[t.ID]; ok && v != t.VNI {
			out = append(out, fmt.Sprintf("%s vni %d -> %d", t.ID, v, t.VNI))
		}
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func (p *Processes) find(name string) (*proc, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.procs {
		if pr.name == name {
			return pr, nil
		}
	}
	return nil, fmt.Errorf("no process %q (the controller is %q, agents are named by node)", name, "controller")
}

// Kill sends sig to a process ("controller" or a node name) and waits up
// to wait for it to exit (SIGKILL after that). Its exit is expected: it is
// not reported on Exited, and Restart starts it again.
func (p *Processes) Kill(name string, sig syscall.Signal, wait time.Duration) error {
	pr, err := p.find(name)
	if err != nil {
		return err
	}
	pr.expected.Store(true)
	if err := pr.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", name, err)
	}
	select {
	case <-pr.done:
		return nil
	case <-time.After(wait):
	}
	if err := pr.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s: %w", name, err)
	}
	<-pr.done
	return nil
}

// Restart starts a process that Kill stopped, with the same arguments.
func (p *Processes) Restart(name string) error {
	pr, err := p.find(name)
	if err != nil {
		return err
	}
	select {
	case <-pr.done:
	default:
		return fmt.Errorf("restart %s: it is running", name)
	}
	return p.start(name, pr.ns, pr.args...)
}

// PID is a running process's process id.
func (p *Processes) PID(name string) (int, error) {
	pr, err := p.find(name)
	if err != nil {
		return 0, err
	}
	return pr.cmd.Process.Pid, nil
}

// Stop stops the agents, then the controller: SIGTERM, SIGKILL after 10
// s. It can be called again.
func (p *Processes) Stop() error {
	p.stopping.Store(true)
	p.mu.Lock()
	procs := append([]*proc(nil), p.procs...)
	p.mu.Unlock()
	var errs []error
	// Agents first (they are after the controller in the list).
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (pr *proc) stop(grace time.Duration) error {
	select {
	case <-pr.done:
		return nil
	default:
	}
	if err := pr.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop %s: %w", pr.name, err)
	}
	select {
	case <-pr.done:
		return nil
	case <-time.After(grace):
	}
	if err := pr.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s: %w", pr.name, err)
	}
	<-pr.done
	return nil
}

// Guide is what roce-lab prints once the lab is up: where things are and
// commands to try.
func (p *Processes) Guide() string {
	f := p.f
	var b bytes.Buffer
	plan := f.Plan()
	want := f.placement(plan)
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	curl := fmt.Sprintf("ip netns exec %s curl -s --cacert %s --cert %s --key %s", f.MgmtNS(), p.certs.CA, p.certs.AdminCert, p.certs.AdminKey)
	w("Lab %q: %d hosts x %d rails on %d leaves, %d tenants; work dir %s", f.prefix, f.Hosts(), f.Rails(), f.Leaves(), len(plan.Tenants), f.workDir)
	w("")
	w("Controller  %s  (netns %s, log %s)", p.url, f.MgmtNS(), p.LogFile("controller"))
	for _, t := range plan.Tenants {
		w("  %s %s/v1/tenants/%s/health", curl, p.url, t.ID)
	}
	w("  %s %s/v1/nodes", curl, p.url)
	w("")
	w("Agents (netns, management address, log):")
	for i := range f.hosts {
		w("  %-8s %-6s %-15s %s", f.Node(i), f.HostNS(i), f.MgmtAddr(i), p.LogFile(f.Node(i)))
	}
	w("  ip netns exec %s curl -s %s/metrics", f.MgmtNS(), p.AgentURL(0))
	w("  ip netns exec %s curl -s %s/v1/status", f.MgmtNS(), p.AgentURL(0))
	w("  ip netns exec %s %s inventory --sysfs-root %s", f.HostNS(0), filepath.Join(p.o.BinDir, AgentBinary), f.SysfsRoot(0))
	w("")
	if iv := p.ProbeInterval(); iv > 0 {
		w("Probes: every %s each bound rail probes its tenant peers over the rails (mTLS, probe API :%d on the rail addresses)", iv, ProbeAPIPort)
	} else {
		w("Probes: no scheduled rounds; the probe API serves on :%d on the rail addresses", ProbeAPIPort)
	}
	w("with the lab's fake ib_write_bw, ib_write_lat and rping (%s): the tenant health has the pair matrix (pairs, pairs_ok).", filepath.Join(f.workDir, "hosts", "<node>", "tools"))
	if h, r, peer, ok := f.exampleProbe(want); ok {
		w("  ip netns exec %s %s --config %s probe --peer %s --rail %d --tool rping --family ipv4",
			f.HostNS(h), filepath.Join(p.o.BinDir, AgentBinary), p.AgentConfig(h), peer, r)
	}
	w("")
	if sock := f.LLDPSocket(0); sock != "" {
		w("LLDP: lldpd in every host namespace (system name: the node) and leaf namespace (%s, ..., port ID: the leaf port);", f.LeafName(0))
		w("each agent checks its rails' neighbours against the plan's cabling (rail condition CablingOK; roce-lab --swap-rails miscables):")
		w("  lldpcli -u %s show neighbors", sock)
		if bad := f.miscabledList(); bad != "" {
			w("Miscabled (rails swapped at the leaf): %s", bad)
		}
	} else {
		w("LLDP: none (%s): no cabling check.", f.LLDPNote())
	}
	if ok, bad := f.examplePings(want); ok != "" || bad != "" {
		w("")
		if ok != "" {
			w("Within a tenant (works): %s", ok)
		}
		if bad != "" {
			w("Across tenants (fails):  %s", bad)
		}
	}
	if mv, after := f.exampleMove(plan, want); mv != "" {
		w("")
		w("Move a GPU to another tenant (the lab's leaves follow within a second):")
		w("  %s -X POST -H 'Content-Type: application/json' -d '%s' %s/v1/moves", curl, mv, p.url)
		if after != "" {
			w("then this works: %s", after)
		}
	}
	if name, addr := f.ExposeLink(); name != "" {
		w("")
		w("Exposed: %s in this namespace holds %s: the URLs above work without ip netns exec.", name, addr)
	}
	w("")
	w("Ctrl-C removes everything.")
	return strings.TrimRight(b.String(), "\n")
}

// examplePings are ping commands: one between two hosts of a tenant
// (across leaves when there is such a pair), one between tenants.
func (f *Fabric) examplePings(want [][]string) (ok, bad string) {
	cmd := func(h, r, dh int) string {
		src, dst := f.Rail(h, r), f.Rail(dh, r)
		return fmt.Sprintf("ip netns exec %s ping -c 1 -W 1 -I %s %s   # %s rail %d (%s) -> %s rail %d (%s)",
			src.HostNS, src.HostIPv4.Addr(), dst.HostIPv4.Addr(), src.Node, r, orNone(want[h][r]), dst.Node, r, orNone(want[dh][r]))
	}
	for pass := 0; pass < 2 && ok == ""; pass++ {
		for h := range f.hosts {
			for dh := range f.hosts {
				for r := 0; r < f.plan.Rails && ok == ""; r++ {
					if h == dh || want[h][r] == "" || want[h][r] != want[dh][r] {
						continue
					}
					if pass == 0 && f.hosts[h].leaf == f.hosts[dh].leaf {
						continue
					}
					ok = cmd(h, r, dh)
				}
			}
		}
	}
	for h := range f.hosts {
		for dh := range f.hosts {
			for r := 0; r < f.plan.Rails && bad == ""; r++ {
				if h != dh && want[h][r] != "" && want[dh][r] != "" && want[h][r] != want[dh][r] {
					bad = cmd(h, r, dh)
				}
			}
		}
	}
	return ok, bad
}

// exampleProbe is a rail of a host with a peer in its tenant (on another
// leaf when there is one).
func (f *Fabric) exampleProbe(want [][]string) (host, rail int, peer string, ok bool) {
	for pass := 0; pass < 2; pass++ {
		for h := range f.hosts {
			for r := 0; r < f.plan.Rails; r++ {
				for dh := range f.hosts {
					if h == dh || want[h][r] == "" || want[h][r] != want[dh][r] || (pass == 0 && f.hosts[h].leaf == f.hosts[dh].leaf) {
						continue
					}
					return h, r, f.Node(dh), true
				}
			}
		}
	}
	return 0, 0, "", false
}

// exampleMove is a POST /v1/moves body moving a GPU to another tenant,
// preferably GPU 0 of a node split between tenants (GPU isolation), and a
// ping that works once the move is done.
func (f *Fabric) exampleMove(plan v1.FabricPlan, want [][]string) (move, after string) {
	if len(plan.Tenants) < 2 {
		return "", ""
	}
	for pass := 0; pass < 2; pass++ {
		for i := range f.hosts {
			if pass == 0 && !mixed(want[i]) {
				continue
			}
			for g, t := range want[i] {
				if t == "" {
					continue
				}
				for _, other := range plan.Tenants {
					if other.ID == t {
						continue
					}
					m, _ := json.Marshal(v1.Move{Node: f.Node(i), GPUs: []int{g}, Tenant: other.ID})
					for dh := range f.hosts {
						if dh != i && want[dh][g] == other.ID {
							src, dst := f.Rail(i, g), f.Rail(dh, g)
							after = fmt.Sprintf("ip netns exec %s ping -c 1 -W 1 -I %s %s   # %s rail %d -> %s rail %d (%s)",
								src.HostNS, src.HostIPv4.Addr(), dst.HostIPv4.Addr(), src.Node, g, dst.Node, g, other.ID)
							break
						}
					}
					return string(m), after
				}
			}
		}
	}
	return "", ""
}

// mixed reports rails of more than one tenant.
func mixed(tenants []string) bool {
	for _, t := range tenants {
		if t != tenants[0] {
			return true
		}
	}
	return false
}
