package e2e

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nutsgate/nutsgate/internal/e2ebin"
	"github.com/nutsgate/nutsgate/internal/testnode"
)

// siteCaddyfile is Caddyfile.example's layout folded into one loopback site, so that every
// route can be reached with every path: path_guard first; the node's public APIs open; /public
// with CORS; /n2n behind a required client certificate (one subject denied inline) and a rate
// limit; /internal behind token_v2; everything else 404. TLS with the test PKI, asking for (not
// requiring) a client certificate as on :443.
const siteCaddyfile = `{
	admin 127.0.0.1:{{.Admin}}
	default_bind 127.0.0.1
	auto_https disable_redirects
	servers {
		protocols {{.Protocols}}
	}
	log {
		level INFO
	}
	nutsgate {
		deny_file {{.Dir}}/deny.txt
	}
}

https://localhost:{{.Port}} {
	path_guard

	tls {{.Dir}}/server.pem {{.Dir}}/server.key {
{{- if .ClientAuth}}
		client_auth {
			mode verify_if_given
			trust_pool file {{.Dir}}/ca.pem
		}
{{- end}}
	}

	request_body {
		max_size 1MB
	}

	@public_apis path /iam/* /oauth2/* /.well-known/* /statuslist/* /discovery/* /status
	handle @public_apis {
		reverse_proxy {{.NodePublic}}
	}

	handle /public/* {
		cors {
			origins {{.AllowedOrigin}} {{.OriginPattern}}
			headers Authorization Content-Type
		}
		reverse_proxy {{.NodePublic}}
	}

	handle /n2n/* {
		mtls_ident {
			require
			deny "{{.Denied}}"
		}
		client_rate_limit {
			rate {{.Rate}}
		}
		reverse_proxy {{.NodePublic}}
	}

	handle /internal/* {
		token_v2 {
			authorized_keys {{.Dir}}/authorized_keys
			audience {{.Audience}}
		}
		reverse_proxy {{.NodeInternal}}
	}

	handle {
		respond 404
	}
}
`

// CORS origins of the site gateway.
const (
	allowedOrigin = "https://app.example.org"
	originPattern = "https://*.example.com"
)

// siteDeniedCN is the CN of the client the site's /n2n route denies inline.
const siteDeniedCN = "site-denied"

// siteSettings fill siteCaddyfile.
type siteSettings struct {
	Admin, Port                  int
	Dir                          string
	NodePublic, NodeInternal     string
	AllowedOrigin, OriginPattern string
	Denied, Rate, Audience       string
	Protocols                    string // the server's protocols: "h1 h2", or "h1 h2 h3"
	ClientAuth                   bool   // ask for client certificates (Caddy then issues no session tickets)
}

// siteGateway is a running gateway of siteCaddyfile in front of an in-process test node.
type siteGateway struct {
	*process
	siteSettings
	cfgPath string
	pki     *testPKI
	node    *testnode.Node
	key     *testKey // the one key of authorized_keys
}

// startSiteGateway starts a test node and a gateway of siteCaddyfile in front of it, with /n2n
// limited to n2nRate (client_rate_limit's "<n>/<duration>") per client, and returns once the admin port accepts
// connections and the site completes a TLS handshake.
func startSiteGateway(t *testing.T, n2nRate string) *siteGateway {
	t.Helper()
	return startSiteGatewayWith(t, n2nRate, "h1 h2", true)
}

// startSiteGatewayWith is startSiteGateway with the server's protocols (Caddy's `protocols`
// option) set, "h1 h2 h3" to serve HTTP/3 (with 0-RTT, Caddy's default) on the site's port over
// UDP as well, and with or without client_auth. Caddy issues TLS session tickets, and so
// accepts 0-RTT, only on a site without client_auth, as Caddyfile.example's internal site.
func startSiteGatewayWith(t *testing.T, n2nRate, protocols string, clientAuth bool) *siteGateway {
	t.Helper()
	node, err := testnode.Start(testnode.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	g := &siteGateway{pki: newPKI(t, "e2e site CA"), node: node, key: newKey(t, ed25519Key, "site-operator")}
	g.siteSettings = siteSettings{
		Admin: e2ebin.FreePort(t), Port: e2ebin.FreePort(t),
		Dir:           t.TempDir(),
		NodePublic:    strings.TrimPrefix(node.PublicURL(), "http://"),
		NodeInternal:  strings.TrimPrefix(node.InternalURL(), "http://"),
		AllowedOrigin: allowedOrigin, OriginPattern: originPattern,
		Denied:     testName(siteDeniedCN).String(),
		Rate:       n2nRate,
		Audience:   testAudience,
		Protocols:  protocols,
		ClientAuth: clientAuth,
	}
	g.cfgPath = writeGatewayDir(t, g.Dir, serverFiles(t, g.pki, map[string][]byte{
		"authorized_keys": []byte(authorizedKeysText(g.key)),
	}), siteCaddyfile, g.siteSettings)
	g.process = e2ebin.Start(t, binPath, g.cfgPath, func() bool {
		c, err := net.DialTimeout("tcp", g.addr(g.Admin), time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return tlsReady(g.addr(g.Port), g.tlsConfig(nil))
	})
	return g
}

// addr is 127.0.0.1:port.
func (g *siteGateway) addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// tlsConfig trusts the test CA, sends SNI localhost and presents c unless c is nil.
func (g *siteGateway) tlsConfig(c *leafCert) *tls.Config {
	return withClientCert(&tls.Config{RootCAs: g.pki.pool, ServerName: "localhost"}, c)
}

// bearer is an Authorization header value with a fresh valid token_v2 token.
func (g *siteGateway) bearer(t *testing.T) string {
	t.Helper()
	return g.key.newToken().bearer(t)
}

// request sends one request through Go's HTTP client (which cleans nothing that matters for
// these tests) as client c (nil: none) to the site.
func (g *siteGateway) request(t *testing.T, c *leafCert, method, path string, header http.Header) httpsResult {
	t.Helper()
	return httpsRequest{tls: g.tlsConfig(c), port: g.Port, method: method, path: path, header: header}.do(t)
}

// rawResult is the answer to a raw request: status and headers, or the error that prevented
// one.
type rawResult struct {
	status int
	header http.Header
	body   string
	err    error
}

func (r rawResult) String() string {
	if r.err != nil {
		return "error: " + r.err.Error()
	}
	return strconv.Itoa(r.status) + " " + strconv.Quote(truncate(r.body, 120))
}

// raw sends target byte for byte as the request target of an HTTP/1.1 GET over a fresh TLS
// connection (as client c, nil: none), with headers in the order given, and reads the answer.
// Go's HTTP client would clean or re-encode the path; this does not.
func (g *siteGateway) raw(t *testing.T, c *leafCert, target string, headers ...string) rawResult {
	t.Helper()
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: localhost:%d\r\n", target, g.Port)
	for _, h := range headers {
		req.WriteString(h + "\r\n")
	}
	req.WriteString("Connection: close\r\n\r\n")
	return g.rawBytes(t, c, req.String())
}

// rawBytes writes req, a whole HTTP/1.1 request as written, over a fresh TLS connection (as
// client c, nil: none) and reads the answer.
func (g *siteGateway) rawBytes(t *testing.T, c *leafCert, req string) rawResult {
	t.Helper()
	cfg := g.tlsConfig(c)
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", g.addr(g.Port), cfg)
	if err != nil {
		return rawResult{err: err}
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return rawResult{err: err}
	}
	if _, err := io.WriteString(conn, req); err != nil {
		return rawResult{err: err}
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return rawResult{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return rawResult{status: resp.StatusCode, header: resp.Header, body: string(body), err: err}
}

// nodeRequestsWith returns the node's HTTP requests whose raw target contains s.
func (g *siteGateway) nodeRequestsWith(s string) []testnode.Request {
	var out []testnode.Request
	for _, r := range g.node.Requests() {
		if strings.Contains(r.RequestURI, s) {
			out = append(out, r)
		}
	}
	return out
}

// ---- Prometheus ----

// metricSample names one sample of the text exposition format: the metric name and its labels
// rendered sorted, as `name{a="x",b="y"}`.
type metricSample = string

// sample renders a metric name with labels (name, value pairs) as a metricSample. A label with
// an empty value is left out: Prometheus treats it as absent.
func sample(name string, labels ...string) metricSample {
	var pairs []string
	for i := 0; i+1 < len(labels); i += 2 {
		if labels[i+1] != "" {
			pairs = append(pairs, labels[i]+"="+strconv.Quote(labels[i+1]))
		}
	}
	sort.Strings(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// scrapeMetrics GETs /metrics on the admin endpoint and returns every sample whose metric name
// starts with prefix.
func (g *siteGateway) scrapeMetrics(t *testing.T, prefix string) map[metricSample]float64 {
	t.Helper()
	return scrapeMetricsAt(t, g.addr(g.Admin), prefix)
}

// scrapeMetricsAt is scrapeMetrics of the admin endpoint at addr.
func scrapeMetricsAt(t *testing.T, addr, prefix string) map[metricSample]float64 {
	t.Helper()
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d, %v\n%.500s", resp.StatusCode, err, body)
	}
	out := map[metricSample]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") || !strings.HasPrefix(line, prefix) {
			continue
		}
		name, labels, value, err := parseSampleLine(line)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[sample(name, labels...)] = value
	}
	return out
}

// parseSampleLine parses one sample line of the Prometheus text format, `name{l="v",...} value`
// (no timestamp), into the name, the label pairs and the value.
func parseSampleLine(line string) (name string, labels []string, value float64, err error) {
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return "", nil, 0, errors.New("no value")
	}
	name, rest := line[:i], line[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, ",")
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.Index(rest, "=\"")
			if eq < 0 {
				return "", nil, 0, errors.New("bad labels")
			}
			label := rest[:eq]
			rest = rest[eq+2:]
			var val strings.Builder
			for {
				if rest == "" {
					return "", nil, 0, errors.New("unterminated label value")
				}
				ch := rest[0]
				rest = rest[1:]
				if ch == '"' {
					break
				}
				if ch == '\\' && rest != "" {
					switch rest[0] {
					case 'n':
						ch = '\n'
					default:
						ch = rest[0]
					}
					rest = rest[1:]
				}
				val.WriteByte(ch)
			}
			labels = append(labels, label, val.String())
		}
	}
	value, err = strconv.ParseFloat(strings.TrimSpace(rest), 64)
	return name, labels, value, err
}

// relaxedSiteRate is a /n2n rate limit no test of the site gateway reaches.
const relaxedSiteRate = "10000/1m"
