// Package pki decides whether a verified client certificate chain may pass,
// as a Nuts node does for its peers: by certificate revocation lists and by
// the Nuts denylist.
//
// A Checker holds the CRLs named by the certificates it sees (their HTTP(S)
// distribution points) and those it is configured with, and the denylist.
// It fetches a source the first time a certificate needs it, then again
// every Config.Refresh; a fetch that fails, or brings a CRL or list that is
// not to be trusted, keeps the last good one. What it holds is written to a
// state directory and read back after a restart, so that a revocation
// survives a restart while the source is down.
//
// Check and Held give the verdict on a chain: revoked (a certificate's
// serial is in its issuer's CRL), banned (the denylist names a certificate
// of the chain: issuer, serial number and key thumbprint all match),
// expired, or, when a CRL or the denylist cannot be had or is past due,
// stale once it is more than Config.MaxStale past due (with no MaxStale, the
// node's soft-fail: such a chain passes, and a warning is logged). It has
// no Caddy import.
package pki
