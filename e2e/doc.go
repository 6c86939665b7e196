// Package e2e holds nutsgate's black-box end-to-end tests.
//
// The tests build the real binary from ./cmd/nutsgate once (TestMain), then start it the way an
// operator would: `nutsgate run --config Caddyfile --adapter caddyfile`, on loopback ports only,
// in front of a recording stand-in for the Nuts node (for the mTLS and gRPC tests the in-process
// internal/testnode, with net/http and grpc-go clients talking real TLS with certificates each
// test makes up). They judge the gateway from outside only: status codes, bodies, headers, gRPC
// statuses, what the upstream received, the process's exit status and its log output.
//
// Run them with `go test ./e2e/ -count=1`.
package e2e
