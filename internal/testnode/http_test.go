package testnode

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// startNode starts a Node with opts and closes it when the test ends.
func startNode(t *testing.T, opts Options) *Node {
	t.Helper()
	n, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// do sends one HTTP request and returns the status and body of the answer.
func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Test", "yes")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(got)
}

func TestHTTPRecordsAndEchoes(t *testing.T) {
	n := startNode(t, Options{})
	tests := []struct {
		listener, base, method, target, body string
	}{
		{ListenerPublic, n.PublicURL(), http.MethodPost, "/n2n/transactions?x=1&y=%3A", "hello"},
		{ListenerInternal, n.InternalURL(), http.MethodGet, "/internal/vdr/v2/did", ""},
	}
	for i, tc := range tests {
		status, body := do(t, tc.method, tc.base+tc.target, tc.body)
		var got echo
		if err := json.Unmarshal([]byte(body), &got); err != nil || status != http.StatusOK {
			t.Fatalf("%s: status %d body %q: %v", tc.target, status, body, err)
		}
		path, query, _ := strings.Cut(tc.target, "?")
		if want := (echo{Listener: tc.listener, Method: tc.method, Path: path}); got != want {
			t.Errorf("echo %+v, want %+v", got, want)
		}
		r := n.Requests()[i]
		if r.Listener != tc.listener || r.Method != tc.method || r.Path != path || r.RawQuery != query ||
			string(r.Body) != tc.body || r.BodySize != int64(len(tc.body)) || r.Header.Get("X-Test") != "yes" {
			t.Errorf("recorded %+v, want %s %s %s on %s with body %q", r, tc.method, path, query, tc.listener, tc.body)
		}
	}
	if !n.SawPath("/n2n/transactions") || n.SawPath("/n2n") {
		t.Error("SawPath does not match exact decoded paths")
	}
	n.Reset()
	if len(n.Requests()) != 0 || n.SawPath("/n2n/transactions") {
		t.Error("Reset kept requests")
	}
}

func TestHTTPStatus(t *testing.T) {
	n := startNode(t, Options{})
	for _, base := range []string{n.PublicURL(), n.InternalURL()} {
		if status, body := do(t, http.MethodGet, base+"/status", ""); status != http.StatusOK || body != "OK" {
			t.Errorf("%s/status: %d %q, want 200 OK", base, status, body)
		}
	}
	if got := len(n.Requests()); got != 2 {
		t.Errorf("recorded %d requests, want 2", got)
	}
}

// TestHTTPKeepsRawTarget shows the node sees paths uncleaned, so tests can
// tell what a gateway forwarded.
func TestHTTPKeepsRawTarget(t *testing.T) {
	n := startNode(t, Options{})
	const target = "/n2n/a/%2e%2e//b%2Fc"
	do(t, http.MethodGet, n.PublicURL()+target, "")
	r := n.Requests()[0]
	if r.RequestURI != target || r.Path != "/n2n/a/..//b/c" {
		t.Errorf("recorded target %q path %q", r.RequestURI, r.Path)
	}
}

func TestHTTPBodyCap(t *testing.T) {
	n := startNode(t, Options{MaxBodyBytes: 4})
	do(t, http.MethodPut, n.PublicURL()+"/iam/x", "0123456789")
	if r := n.Requests()[0]; string(r.Body) != "0123" || r.BodySize != 10 {
		t.Errorf("recorded body %q of size %d, want \"0123\" of 10", r.Body, r.BodySize)
	}
}

// TestHTTPRecordsTrailers: the trailers of a chunked request are recorded,
// declared ones and undeclared ones alike.
func TestHTTPRecordsTrailers(t *testing.T) {
	n := startNode(t, Options{})
	for _, declare := range []string{"Trailer: X-Trail\r\n", ""} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(n.PublicURL(), "http://"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.WriteString(conn, "POST /public/x HTTP/1.1\r\nHost: node\r\nConnection: close\r\n"+declare+
			"Transfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\nX-Trail: 1\r\n\r\n")
		if err == nil {
			_, err = io.ReadAll(conn)
		}
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	reqs := n.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests recorded, want 2", len(reqs))
	}
	for _, r := range reqs {
		if string(r.Body) != "body" || r.Trailer.Get("X-Trail") != "1" {
			t.Errorf("recorded body %q, trailers %v; want body and X-Trail: 1", r.Body, r.Trailer)
		}
	}
}

// TestHTTPEchoesForwardedCert: with the certificate header present, the
// answer names the certificate's subject and fingerprint, as read the node's
// way; an unreadable header is reported, not ignored; without the header the
// answer has neither.
func TestHTTPEchoesForwardedCert(t *testing.T) {
	n := startNode(t, Options{CertHeader: "X-Client-Cert"})
	cert := newCert(t, "echo-node")
	get := func(values ...string) echo {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, n.PublicURL()+"/n2n/hello", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			req.Header.Add("x-client-cert", v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got echo
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %v", resp.StatusCode, err)
		}
		return got
	}

	for _, value := range []string{escapedPEM(cert), base64DER(cert)} {
		got := get(value)
		if got.CertSubject != cert.Subject.String() || got.CertFingerprint != Fingerprint(cert) || got.CertError != "" {
			t.Errorf("echo %+v, want subject %q and fingerprint %s", got, cert.Subject, Fingerprint(cert))
		}
	}
	if got := get(); got.CertSubject != "" || got.CertFingerprint != "" || got.CertError != "" {
		t.Errorf("echo without the header %+v, want no certificate fields", got)
	}
	for _, values := range [][]string{{"not a certificate"}, {escapedPEM(cert), escapedPEM(cert)}} {
		if got := get(values...); got.CertError == "" || got.CertSubject != "" || got.CertFingerprint != "" {
			t.Errorf("echo for header %.20q (%d values) %+v, want cert_error only", values[0], len(values), got)
		}
	}
}
