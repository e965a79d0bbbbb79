package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/controller"
	"github.com/roce-agent/roce-agent/fabric"
)

// serveOptions are serve's flags.
type serveOptions struct {
	listen, dataDir                 string
	etcdEndpoints                   []string
	etcdCA, etcdCert, etcdKey       string
	prefix, planFile                string
	replacePlan                     bool
	tlsCert, tlsKey, clientCA       string
	tokensFile                      string
	admins                          []string
	insecureHTTP                    bool
	leaseTTL, maxWait, shutdownWait time.Duration
	pprofListen                     string
}

func newServeCommand(lo *logOptions, stderr io.Writer) *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the controller API",
		Long: `Serve the controller API v1 on --listen until SIGTERM or SIGINT, which close
waiting long-polls, drain requests and stop etcd cleanly.

Store: an embedded etcd member in --data-dir (on unix sockets inside it,
reachable by nobody else), or the etcd cluster of --etcd-endpoints.

Plan: --plan FILE (YAML or JSON) seeds the store: it is stored when no plan
is, and otherwise ignored (with a log line), so that a restart never undoes
tenant moves made through the API. --replace-plan stores the file over the
stored plan through the same change path as a tenant PUT: only nodes whose
configs change get a new generation. An invalid plan stops serve (exit 2)
with every problem listed. Without --plan the stored plan is served; with
no plan at all serve runs but is not ready (/readyz says why) until one is
stored.

Identity: a verified TLS client certificate (its CommonName: a node's name or
an admin name) or a bearer token of --tokens. A node may read its own config
and write its own status and heartbeat; everything else needs an admin
(--admin names, or a token with admin: true). /healthz, /readyz and /metrics
need no identity. Plain HTTP only with --insecure-http (tokens only).`,
		Example: `  # a lab: certificates, then the controller with an embedded etcd
  roce-controller certs --dir pki --server-host localhost --names gpu-000,admin
  roce-controller serve --plan fabric.yaml --data-dir /var/lib/roce-controller \
    --tls-cert pki/server.pem --tls-key pki/server-key.pem --client-ca pki/ca.pem

  # a replica of a shared fabric
  roce-controller serve --etcd-endpoints http://10.0.0.1:2379,http://10.0.0.2:2379,http://10.0.0.3:2379 \
    --tls-cert pki/server.pem --tls-key pki/server-key.pem --client-ca pki/ca.pem --tokens tokens.yaml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(stderr, *lo)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), o, log, lo.level == "debug")
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:8443", "address to serve the API on")
	f.StringVar(&o.dataDir, "data-dir", "/var/lib/roce-controller", "directory of the embedded etcd member (unused with --etcd-endpoints)")
	f.StringSliceVar(&o.etcdEndpoints, "etcd-endpoints", nil, "use this etcd cluster (comma-separated URLs) instead of an embedded member")
	f.StringVar(&o.etcdCA, "etcd-ca", "", "CA of the etcd cluster's server certificates (https endpoints)")
	f.StringVar(&o.etcdCert, "etcd-cert", "", "client certificate for etcd")
	f.StringVar(&o.etcdKey, "etcd-key", "", "client key for etcd")
	f.StringVar(&o.prefix, "etcd-prefix", controller.DefaultPrefix, "prefix of every etcd key")
	f.StringVar(&o.planFile, "plan", "", "fabric plan to store on start when none is stored (YAML or JSON)")
	f.BoolVar(&o.replacePlan, "replace-plan", false, "store --plan over the stored plan (undoes tenant changes made through the API)")
	f.StringVar(&o.tlsCert, "tls-cert", "", "server certificate (PEM)")
	f.StringVar(&o.tlsKey, "tls-key", "", "server key (PEM)")
	f.StringVar(&o.clientCA, "client-ca", "", "CA of client certificates (PEM); their CommonName is the identity")
	f.StringVar(&o.tokensFile, "tokens", "", "bearer tokens: YAML list of {name, token_sha256 or token, admin}")
	f.StringArrayVar(&o.admins, "admin", []string{"admin"}, "an admin identity (repeatable)")
	f.BoolVar(&o.insecureHTTP, "insecure-http", false, "serve plain HTTP (a lab: tokens travel in the clear)")
	f.DurationVar(&o.leaseTTL, "lease-ttl", controller.DefaultLeaseTTL, "a node is alive this long after its last heartbeat (whole seconds, at least 2s)")
	f.DurationVar(&o.maxWait, "max-wait", controller.DefaultMaxWait, "longest config long-poll (?wait= is capped to it)")
	f.DurationVar(&o.shutdownWait, "shutdown-timeout", 10*time.Second, "how long SIGTERM waits for requests to finish")
	f.StringVar(&o.pprofListen, "pprof-listen", "", "serve Go's profiler (/debug/pprof/) on this address, with no authentication (keep it on localhost)")
	return cmd
}

// check refuses conflicting or missing flags.
func (o serveOptions) check() error {
	switch {
	case o.insecureHTTP && (o.tlsCert != "" || o.tlsKey != "" || o.clientCA != ""):
		return usagef("serve: --insecure-http serves plain HTTP: drop --tls-cert, --tls-key and --client-ca, or drop --insecure-http")
	case !o.insecureHTTP && (o.tlsCert == "" || o.tlsKey == ""):
		return usagef("serve: --tls-cert and --tls-key are required: the API carries node identities and admin tokens, so plain HTTP needs --insecure-http")
	case o.clientCA == "" && o.tokensFile == "":
		return usagef("serve: no way to authenticate anyone: give --client-ca (client certificates) or --tokens (bearer tokens)")
	case (o.etcdCert == "") != (o.etcdKey == ""):
		return usagef("serve: --etcd-cert and --etcd-key go together")
	case len(o.etcdEndpoints) == 0 && (o.etcdCA != "" || o.etcdCert != ""):
		return usagef("serve: --etcd-ca, --etcd-cert and --etcd-key are for --etcd-endpoints")
	case o.leaseTTL < 2*time.Second:
		return usagef("serve: --lease-ttl %v is below 2s", o.leaseTTL)
	case o.maxWait <= 0:
		return usagef("serve: --max-wait must be positive")
	}
	for _, a := range o.admins {
		if a == "" {
			return usagef("serve: --admin is empty")
		}
	}
	return nil
}

// serverTLS is the listener's TLS configuration (nil: plain HTTP).
func (o serveOptions) serverTLS() (*tls.Config, error) {
	if o.insecureHTTP {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
	if err != nil {
		return nil, usagef("serve: --tls-cert/--tls-key: %v", err)
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if o.clientCA != "" {
		pool, err := loadPool(o.clientCA)
		if err != nil {
			return nil, usagef("serve: --client-ca: %v", err)
		}
		conf.ClientCAs = pool
		// Tokens work without a certificate: ask, do not require.
		conf.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return conf, nil
}

// etcdTLS is the etcd client's TLS configuration (nil: plain).
func (o serveOptions) etcdTLS() (*tls.Config, error) {
	if o.etcdCA == "" && o.etcdCert == "" {
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.etcdCA != "" {
		pool, err := loadPool(o.etcdCA)
		if err != nil {
			return nil, usagef("serve: --etcd-ca: %v", err)
		}
		conf.RootCAs = pool
	}
	if o.etcdCert != "" {
		cert, err := tls.LoadX509KeyPair(o.etcdCert, o.etcdKey)
		if err != nil {
			return nil, usagef("serve: --etcd-cert/--etcd-key: %v", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// readPlan parses the plan file; an invalid plan is a usage error that
// lists every problem.
func readPlan(file string) (v1.FabricPlan, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return v1.FabricPlan{}, usagef("serve: --plan: %v", err)
	}
	p, err := fabric.ParsePlan(data)
	if err != nil {
		var problems []string
		for _, line := range strings.Split(err.Error(), "\n") {
			if line != "" {
				problems = append(problems, "  "+line)
			}
		}
		return v1.FabricPlan{}, usagef("serve: plan %s is invalid (%d problems):\n%s", file, len(problems), strings.Join(problems, "\n"))
	}
	return p, nil
}

// maxStreams bounds the concurrent HTTP/2 streams of one connection.
const maxStreams = 1000

// fdReserve are the open files kept for etcd and everything but API
// connections.
const fdReserve = 1024

// maxConnections is the most API connections the open-file limit allows
// (0: no limit).
func maxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 0
	}
	return max(int(rl.Cur)-fdReserve, 64)
}

// limitListener accepts at most n connections at once; Accept waits for
// one to close.
type limitListener struct {
	net.Listener
	slots chan struct{}
	done  chan struct{}
	once  sync.Once
}

func newLimitListener(l net.Listener, n int) net.Listener {
	return &limitListener{Listener: l, slots: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// serve runs the controller until ctx ends.
func serve(ctx context.Context, o serveOptions, log *slog.Logger, debug bool) error {
	if err := o.check(); err != nil {
		return err
	}
	tlsConf, err := o.serverTLS()
	if err != nil {
		return err
	}
	etcdTLS, err := o.etcdTLS()
	if err != nil {
		return err
	}
	var tokens []controller.Token
	if o.tokensFile != "" {
		if tokens, err = controller.LoadTokens(o.tokensFile); err != nil {
			return usagef("serve: --tokens: %v", err)
		}
	}
	var plan *v1.FabricPlan
	if o.planFile != "" {
		p, err := readPlan(o.planFile)
		if err != nil {
			return err
		}
		plan = &p
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	// Connections past the open-file limit would leave the embedded etcd
	// unable to open its files (it stops): keep a reserve for it, and let
	// further connections wait in the listen backlog.
	if n := maxConnections(); n > 0 {
		ln = newLimitListener(ln, n)
		log.Debug("connection limit", "max", n)
	}

	// Stopped in reverse: the store, the client, then the member.
	endpoints := o.etcdEndpoints
	var memberErr <-chan error
	if len(endpoints) == 0 {
		m, err := controller.StartMember(ctx, controller.MemberConfig{DataDir: filepath.Join(o.dataDir, "etcd"), Logger: log, Debug: debug})
		if err != nil {
			return err
		}
		defer func() {
			log.Info("stopping the embedded etcd member")
			m.Close()
		}()
		endpoints, memberErr = m.Endpoints(), m.Err()
	}
	cli, err := controller.NewClient(controller.ClientConfig{Endpoints: endpoints, TLS: etcdTLS, Logger: log})
	if err != nil {
		return err
	}
	defer cli.Close()
	store, err := controller.NewStore(controller.StoreConfig{Client: cli, Prefix: o.prefix, LeaseTTL: o.leaseTTL, Logger: log})
	if err != nil {
		return usagef("serve: %v", err)
	}
	defer store.Close()
	srv, err := controller.NewServer(controller.ServerConfig{
		Store: store, Auth: controller.NewAuthenticator(tokens, o.admins), Logger: log, MaxWait: o.maxWait,
	})
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           srv,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelDebug),
	}
	// HTTP/1.1 and HTTP/2: over TLS by ALPN, and on plain HTTP
	// (--insecure-http) as h2c with prior knowledge, so that many agents
	// can share a few connections (behind an L7 load balancer, or in a
	// load test past the open-file limit). A stream is a long-poll, so
	// a connection carries many.
	hs.Protocols = new(http.Protocols)
	hs.Protocols.SetHTTP1(true)
	if tlsConf != nil {
		hs.Protocols.SetHTTP2(true)
	} else {
		hs.Protocols.SetUnencryptedHTTP2(true)
	}
	hs.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: maxStreams}
	hs.RegisterOnShutdown(srv.CloseLongPolls)
	serveErr := make(chan error, 1)
	go func() {
		if tlsConf != nil {
			serveErr <- hs.ServeTLS(ln, "", "")
		} else {
			serveErr <- hs.Serve(ln)
		}
	}()
	log.Info("serving", "address", ln.Addr().String(), "tls", tlsConf != nil, "etcd", strings.Join(endpoints, ","), "prefix", store.Prefix(), "version", version)

	if o.pprofListen != "" {
		pl, err := net.Listen("tcp", o.pprofListen)
		if err != nil {
			return fmt.Errorf("--pprof-listen: %w", err)
		}
		defer pl.Close()
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		go func() { _ = http.Serve(pl, mux) }()
		log.Info("profiler", "address", pl.Addr().String())
	}

	bg, cancelBG := context.WithCancel(ctx)
	defer cancelBG()
	if plan != nil {
		// Not ready until the plan is stored: hold before serving.
		store.Hold("storing the plan of --plan")
	}
	go startup(bg, store, plan, o.replacePlan, log)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-serveErr:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case err := <-memberErr:
		return fmt.Errorf("embedded etcd: %w", err)
	}
	cancelBG()
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownWait)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("requests still running at shutdown", "err", err)
		hs.Close()
	}
	return nil
}

// startup stores the plan (retrying while etcd is unavailable), releases
// the store's hold, and says when the controller is ready, or why not.
func startup(ctx context.Context, store *controller.Store, plan *v1.FabricPlan, replace bool, log *slog.Logger) {
	backoff := 100 * time.Millisecond
	for plan != nil {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var changed []string
		var err error
		if replace {
			changed, err = store.LoadPlan(actx, *plan)
		} else {
			changed, err = store.SeedPlan(actx, *plan)
		}
		cancel()
		if errors.Is(err, controller.ErrPlanStored) {
			log.Info("a plan is stored already: serving it, --plan ignored (--replace-plan stores the file over it)")
			break
		}
		if err == nil {
			log.Info("plan stored", "changed_nodes", len(changed), "nodes", len(plan.Nodes), "tenants", len(plan.Tenants))
			break
		}
		if ctx.Err() != nil {
			return
		}
		if !errors.Is(err, controller.ErrUnavailable) {
			log.Error("the plan was refused; serving the stored one", "err", err)
			break
		}
		log.Warn("storing the plan: etcd is unavailable, retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	store.Release()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := store.WaitReady(wctx); err != nil {
		if ctx.Err() == nil {
			log.Warn("serving, not ready", "reason", err)
		}
		return
	}
	log.Info("ready", "epoch", store.Epoch())
}
