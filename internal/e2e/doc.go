// Package e2e holds the end-to-end tests: real `nearby` binaries on a
// virtual LAN of network namespaces (internal/netlab). They need root and
// run inside `make test`'s isolated namespace; see docs/TESTING.md.
package e2e
