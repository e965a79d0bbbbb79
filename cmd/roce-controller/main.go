// Command roce-controller is the reference controller of roce-agent: it
// serves node configs derived from a fabric plan, stores node statuses and
// liveness in etcd (embedded by default) and exposes tenant views. See
// api/v1/openapi.yaml for its API.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
