// Package e2e holds the end-to-end tests: the built roce-controller and
// roce-agent binaries in the multi-tenant fabric lab (package lab), as
// root. They skip with a message when not root.
package e2e
