// Package v1 is roce-agent's wire contract, version 1, as plain data: the
// inventory (docs/inventory.md), the node status the agent serves at
// /v1/status and sends to a controller, the desired state of a node
// (NodeConfig) with its validation, and probe results. openapi.yaml beside
// these types describes the same JSON and the HTTP API (OpenAPI returns it).
//
// The package imports only the standard library (no cgo, netlink or NVML),
// so that a controller, a CLI or any other client can build against it.
// Its JSON is a public contract: fields are only added within v1.
package v1

import _ "embed"

//go:embed openapi.yaml
var openAPI []byte

// OpenAPI returns the OpenAPI 3 document of the v1 API (a copy: the caller
// may modify it).
func OpenAPI() []byte {
	return append([]byte(nil), openAPI...)
}
