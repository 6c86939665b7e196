package testnode

import (
	"encoding/json"
	"io"
	"net/http"
	"time"
)

// Listener names, as recorded in Request.Listener.
const (
	ListenerPublic   = "public"
	ListenerInternal = "internal"
)

// Request is one HTTP request as the node received it.
type Request struct {
	Listener   string // ListenerPublic or ListenerInternal
	Method     string
	Host       string
	RequestURI string // the request target exactly as sent, not decoded or cleaned
	Path       string // decoded path (URL.Path)
	RawQuery   string
	Header     http.Header
	Trailer    http.Header // the request trailers, read after the body: declared or not
	Body       []byte      // at most Options.MaxBodyBytes
	BodySize   int64       // bytes received in all
	RemoteAddr string
	Time       time.Time
}

// echo is the JSON body of every answer but /status: the listener, method and
// path, and, when the request carries the certificate header, the subject and
// fingerprint (hex SHA-256 of the DER) of the certificate read from it the
// node's way (ParseCertHeader), or why it could not be read.
type echo struct {
	Listener        string `json:"listener"`
	Method          string `json:"method"`
	Path            string `json:"path"`
	CertSubject     string `json:"cert_subject,omitempty"`
	CertFingerprint string `json:"cert_fingerprint,omitempty"`
	CertError       string `json:"cert_error,omitempty"`
}

// newHTTPServer returns a server that records and echoes every request. It
// uses no ServeMux, so paths arrive uncleaned and unredirected.
func (n *Node) newHTTPServer(listener string) *http.Server {
	return &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.handleHTTP(listener, w, r) }),
		ReadHeaderTimeout: 10 * time.Second,
	}
}

// handleHTTP records r and answers it.
func (n *Node) handleHTTP(listener string, w http.ResponseWriter, r *http.Request) {
	req := n.record(listener, r)
	n.opts.Logf("http %s %s %s %s body=%dB", listener, req.Method, req.Host, req.RequestURI, req.BodySize)
	if r.URL.Path == "/status" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "OK")
		return
	}
	answer := echo{Listener: listener, Method: req.Method, Path: req.Path}
	if values := r.Header.Values(n.opts.CertHeader); len(values) > 0 {
		if cert, err := ParseCertHeader(values); err != nil {
			answer.CertError = err.Error()
		} else {
			answer.CertSubject, answer.CertFingerprint = cert.Subject.String(), Fingerprint(cert)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(answer)
}

// record reads r's body (keeping at most MaxBodyBytes) and stores the request.
func (n *Node) record(listener string, r *http.Request) Request {
	body, size := readCapped(r.Body, n.opts.MaxBodyBytes)
	req := Request{
		Trailer:    r.Trailer.Clone(), // Go's server fills r.Trailer once the body is read
		Listener:   listener,
		Method:     r.Method,
		Host:       r.Host,
		RequestURI: r.RequestURI,
		Path:       r.URL.Path,
		RawQuery:   r.URL.RawQuery,
		Header:     r.Header.Clone(),
		Body:       body,
		BodySize:   size,
		RemoteAddr: r.RemoteAddr,
		Time:       time.Now(),
	}
	n.requests.add(req)
	return req
}

// readCapped reads all of r, returning its first max bytes and its size.
// A read error ends the body early; what was read is kept.
func readCapped(r io.Reader, max int64) ([]byte, int64) {
	body, _ := io.ReadAll(io.LimitReader(r, max))
	rest, _ := io.Copy(io.Discard, r)
	return body, int64(len(body)) + rest
}

// Requests returns the recorded HTTP requests, oldest first.
func (n *Node) Requests() []Request { return n.requests.snapshot() }

// SawPath reports whether a recorded HTTP request had this decoded path.
func (n *Node) SawPath(path string) bool {
	for _, r := range n.requests.snapshot() {
		if r.Path == path {
			return true
		}
	}
	return false
}
