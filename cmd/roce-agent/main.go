// Command roce-agent is the RoCE node agent: it maps GPUs to RDMA NICs and
// rails and, as later subcommands land, configures, probes and reports them.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
