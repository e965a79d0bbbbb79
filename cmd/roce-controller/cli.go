package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/roce-agent/roce-agent/controller"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

const exitCodesHelp = `Exit status:
  0  success (serve and etcd-member: stopped by SIGTERM or SIGINT)
  1  error: etcd failed, the listen address is taken, a file could not be
     written
  2  usage or config error: an unknown command or flag, a missing or
     conflicting flag, an unreadable certificate or tokens file, an invalid
     plan (every problem is listed)`

// usageError is a command line or configuration roce-controller cannot
// run with: exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// run executes the command line and returns the exit status; SIGTERM and
// SIGINT stop serve and etcd-member gracefully.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := execute(ctx, args, stdout, stderr)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "roce-controller: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitError
}

func execute(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCommand(stdout, stderr)
	if args == nil {
		args = []string{} // nil would make cobra read os.Args
	}
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// logOptions are the root's logging flags.
type logOptions struct {
	level, format string
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	var lo logOptions
	root := &cobra.Command{
		Use:   "roce-controller",
		Short: "Reference controller of roce-agent: node configs, statuses, liveness and tenants over etcd",
		Long: `roce-controller serves roce-agent's controller API v1 (api/v1/openapi.yaml):
every node's NodeConfig, derived from a fabric plan (nodes, per-rail address
pools, tenants), long-polled by the agents; their statuses and heartbeats;
and the administration of tenants and moves. Its state lives in etcd: an
embedded single member in --data-dir by default, or an existing cluster
(--etcd-endpoints), which several replicas can share.

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q (see roce-controller --help)", args[0])
			}
			return usagef("no command given (serve, etcd-member, certs, version)")
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usagef("%s: %v", cmd.CommandPath(), err)
	})
	root.CompletionOptions.DisableDefaultCmd = true
	pf := root.PersistentFlags()
	pf.StringVar(&lo.level, "log-level", "info", "log level: debug, info, warn or error")
	pf.StringVar(&lo.format, "log-format", "auto", "log format: auto (json under systemd or Kubernetes), text or json")
	root.AddCommand(newServeCommand(&lo, stderr), newMemberCommand(&lo, stderr), newCertsCommand(stdout), newVersionCommand(stdout))
	return root
}

// noArgs refuses positional arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s: unexpected argument %q", cmd.CommandPath(), args[0])
	}
	return nil
}

func newLogger(w io.Writer, lo logOptions) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(lo.level)); err != nil {
		return nil, usagef("--log-level: %q is not one of debug, info, warn, error", lo.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	format := lo.format
	if format == "auto" {
		format = "text"
		// systemd sets JOURNAL_STREAM for a service's stderr; Kubernetes
		// sets KUBERNETES_SERVICE_HOST in every pod.
		if os.Getenv("JOURNAL_STREAM") != "" || os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
			format = "json"
		}
	}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, usagef("--log-format: %q is not one of auto, text, json", lo.format)
}

func newMemberCommand(lo *logOptions, stderr io.Writer) *cobra.Command {
	var (
		mc           controller.MemberConfig
		client, peer string
	)
	cmd := &cobra.Command{
		Use:   "etcd-member",
		Short: "Run one embedded etcd member (for a cluster that controllers share)",
		Long: `Run one etcd member, the same etcd the controller embeds, until SIGTERM or
SIGINT. Three of them make a cluster that several controllers can share
(serve --etcd-endpoints), without installing etcd. The peers of a cluster of
several members need http or https URLs; a client URL may be a unix socket
(unix:///path).`,
		Example: `  # a 3-member cluster on one host
  roce-controller etcd-member --name m0 --data-dir /var/lib/etcd-m0 \
    --listen-client http://127.0.0.1:2379 --listen-peer http://127.0.0.1:2380 \
    --initial-cluster m0=http://127.0.0.1:2380,m1=http://127.0.0.1:2382,m2=http://127.0.0.1:2384`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(stderr, *lo)
			if err != nil {
				return err
			}
			if mc.DataDir == "" {
				return usagef("etcd-member: --data-dir is required")
			}
			if mc.InitialCluster != "" {
				names, err := controller.ParseInitialCluster(mc.InitialCluster)
				if err != nil {
					return usagef("etcd-member: --initial-cluster: %v", err)
				}
				if !slices.Contains(names, mc.Name) {
					return usagef("etcd-member: --initial-cluster does not name this member (%s)", mc.Name)
				}
			}
			if mc.ClusterState != "new" && mc.ClusterState != "existing" {
				return usagef("etcd-member: --initial-cluster-state: %q is not new or existing", mc.ClusterState)
			}
			mc.ListenClient = []string{client}
			mc.ListenPeer = []string{peer}
			mc.Logger = log
			mc.Debug = lo.level == "debug"
			m, err := controller.StartMember(cmd.Context(), mc)
			if err != nil {
				return err
			}
			defer m.Close()
			log.Info("etcd member ready", "name", mc.Name, "client_urls", strings.Join(m.Endpoints(), ","), "peer_urls", peer)
			select {
			case <-cmd.Context().Done():
				log.Info("stopping the etcd member")
				return nil
			case err := <-m.Err():
				return fmt.Errorf("etcd member %s: %w", mc.Name, err)
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&mc.Name, "name", controller.DefaultMemberName, "member name (as in --initial-cluster)")
	f.StringVar(&mc.DataDir, "data-dir", "", "member data directory (required)")
	f.StringVar(&client, "listen-client", "http://127.0.0.1:2379", "client URL (http, https or unix:///path)")
	f.StringVar(&peer, "listen-peer", "http://127.0.0.1:2380", "peer URL (http or https)")
	f.StringVar(&mc.InitialCluster, "initial-cluster", "", "every member as name=peerURL, comma-separated (default: this member alone)")
	f.StringVar(&mc.ClusterState, "initial-cluster-state", "new", "new, or existing to join a running cluster")
	f.Int64Var(&mc.QuotaBytes, "quota-bytes", controller.DefaultQuotaBytes, "backend quota in bytes (etcd turns read-only past it)")
	return cmd
}

func newCertsCommand(stdout io.Writer) *cobra.Command {
	var (
		dir          string
		hosts, names []string
	)
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Write a CA, a server certificate and client certificates for a lab",
		Long: `Write into --dir a CA (ca.pem, ca-key.pem; an existing one is kept and
used), a server certificate for --server-host (server.pem, server-key.pem) and
a certificate for each of --names (NAME.pem, NAME-key.pem): ECDSA P-256, PEM,
keys mode 0600. A certificate's name is its identity: a node's name, or an
admin name (--admin). Node certificates serve as client certificates towards
the controller and as server and client certificates of the agents' peer probe
API (peers check the name, not a host name).`,
		Example: `  roce-controller certs --dir /etc/roce-controller/pki --server-host fabric-ctl,10.0.0.10 --names gpu-000,gpu-001,admin`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usagef("certs: --dir is required")
			}
			files, err := controller.WriteCerts(dir, hosts, names)
			for _, f := range files {
				fmt.Fprintln(stdout, "wrote", f)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory to write to (required)")
	f.StringSliceVar(&hosts, "server-host", []string{"localhost", "127.0.0.1", "::1"}, "server certificate DNS names and IP addresses (none: no server certificate)")
	f.StringSliceVar(&names, "names", nil, "client certificate names")
	return cmd
}

func newVersionCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := io.WriteString(stdout, versionText())
			return err
		},
	}
}
