package e2e

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/nutsgate/nutsgate/internal/testnode"
)

// TestNodeAnswerShowsForwardedCert proves what README.md's quick start says of the stand-in
// node's answer to a /n2n call with a client certificate: it names the subject and fingerprint
// of the certificate the gateway forwarded in X-SSL-CERT, and they are the caller's. A call
// without a certificate never reaches the node.
func TestNodeAnswerShowsForwardedCert(t *testing.T) {
	t.Parallel()
	g := startSiteGateway(t, "100/1s")
	client := g.pki.client(t, "answer-shows-cert")
	path := n2nPath("answer")
	res := g.request(t, client, http.MethodGet, path, nil)
	if res.err != nil || res.status != http.StatusOK {
		t.Fatalf("GET %s with a client certificate: %v, status %d, body %q", path, res.err, res.status, res.body)
	}
	var answer struct {
		Listener        string `json:"listener"`
		CertSubject     string `json:"cert_subject"`
		CertFingerprint string `json:"cert_fingerprint"`
	}
	if err := json.Unmarshal([]byte(res.body), &answer); err != nil {
		t.Fatalf("the node's answer %q: %v", res.body, err)
	}
	if answer.CertSubject != client.subject() || answer.CertFingerprint != testnode.Fingerprint(client.leaf) {
		t.Errorf("the node's answer %q names subject %q fingerprint %q; want %q and %q",
			res.body, answer.CertSubject, answer.CertFingerprint, client.subject(), testnode.Fingerprint(client.leaf))
	}

	anon := n2nPath("answer-anon")
	if got := g.request(t, nil, http.MethodGet, anon, nil).statusOr(); got != http.StatusUnauthorized {
		t.Errorf("GET %s without a certificate: status %d, want 401", anon, got)
	}
	if g.node.SawPath(anon) {
		t.Errorf("the node saw %s, refused at the gateway", anon)
	}
}
