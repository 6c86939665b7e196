package e2e

import (
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/nutsgate/nutsgate/internal/testnode"
)

// dialGRPCOverTLS connects to the gRPC port doing the TLS handshake itself with cfg, exactly as
// given (grpc-go's own credentials would fill in the server name, and so send SNI), and uses
// authority as the :authority of its calls.
func (g *mtlsGateway) dialGRPCOverTLS(t *testing.T, cfg *tls.Config, authority string) *grpcClient {
	t.Helper()
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"}
	addr := g.addr(g.GRPC)
	return g.dialGRPC(t, authority,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			conn := tls.Client(raw, cfg)
			if err := conn.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			return conn, nil
		}))
}

// sniCase is how a client names the server: the TLS server name it sends (none for an IP
// address or "") and the host it names in its requests.
type sniCase struct {
	name       string
	serverName string // tls.Config.ServerName; SNI is sent unless it is "" or an IP address
	verify     bool   // verify the server certificate against the test CA and serverName
	host       string // Host of the HTTP requests and :authority of the gRPC calls, without port
}

// sniCases are the ways of reaching a site without the SNI its client_auth policy matches.
var sniCases = []sniCase{
	{"no SNI, unverified, Host localhost", "", false, "localhost"},
	{"no SNI, unverified, Host 127.0.0.1", "", false, "127.0.0.1"},
	{"no SNI, verified by IP SAN, Host localhost", "127.0.0.1", true, "localhost"},
	{"no SNI, verified by IP SAN, Host 127.0.0.1", "127.0.0.1", true, "127.0.0.1"},
	{"SNI LOCALHOST, Host LOCALHOST", "LOCALHOST", false, "LOCALHOST"},
	{"SNI other.example, Host localhost", "other.example", false, "localhost"},
}

// tlsConfig is the client side of the case, presenting c (nil: no certificate).
func (s sniCase) tlsConfig(g *mtlsGateway, c *leafCert) *tls.Config {
	return withClientCert(&tls.Config{RootCAs: g.pki.pool, ServerName: s.serverName, InsecureSkipVerify: !s.verify}, c)
}

// TestClientAuthWithoutSNI proves that client authentication cannot be sidestepped by a TLS
// handshake whose SNI matches no site (none at all, as when connecting by IP address; another
// letter case; another name), where the sites' client_auth connection policies do not apply:
// on /n2n a client with an untrusted, expired or no certificate is never served, whatever Host
// it names, and on the gRPC port its calls fail; the node sees none of it. A trusted client may
// or may not be served that way; if it is, the node must get its real certificate.
func TestClientAuthWithoutSNI(t *testing.T) {
	t.Parallel()
	g := startMTLSGateway(t, relaxedRate, relaxedRate)
	untrusted := newPKI(t, "e2e untrusted CA")
	expiredTmpl := clientTemplate(testName("nosni-expired"))
	expiredTmpl.NotBefore, expiredTmpl.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	certs := []struct {
		name    string
		cert    *leafCert
		trusted bool
	}{
		{"no certificate", nil, false},
		{"untrusted CA", untrusted.client(t, "nosni-untrusted"), false},
		{"expired", g.pki.issue(t, expiredTmpl), false},
		{"trusted", g.pki.client(t, "nosni-trusted"), true},
	}

	for _, c := range certs {
		for _, sc := range sniCases {
			t.Run("n2n/"+c.name+"/"+sc.name, func(t *testing.T) {
				t.Parallel()
				path := n2nPath("nosni")
				r := httpsRequest{
					tls:  sc.tlsConfig(g, c.cert),
					port: g.N2N,
					url:  "https://127.0.0.1:" + strconv.Itoa(g.N2N) + path,
					host: sc.host + ":" + strconv.Itoa(g.N2N),
				}.do(t)
				t.Logf("outcome: %s", r)
				switch {
				case c.trusted && r.statusOr() == 200:
					g.expectForwarded(t, path, c.cert)
				case r.statusOr() == 200:
					t.Errorf("CLIENT AUTHENTICATION BYPASSED: got %s", r)
					fallthrough
				default:
					g.expectNodeSawNothing(t, path)
				}
			})
			t.Run("grpc/"+c.name+"/"+sc.name, func(t *testing.T) {
				t.Parallel()
				cl := g.dialGRPCOverTLS(t, sc.tlsConfig(g, c.cert), sc.host+":"+strconv.Itoa(g.GRPC))
				header, err := cl.unary(t)
				t.Logf("outcome: %v", status.Convert(err))
				switch calls := g.nodeCalls(cl); {
				case c.trusted && err == nil:
					expectSubject(t, header, c.cert)
					g.expectNodeCallsWithCert(t, cl, 1, c.cert)
				case err == nil:
					t.Errorf("CLIENT AUTHENTICATION BYPASSED: call succeeded, node reports subject %q", header.Get(testnode.SubjectHeader))
				case len(calls) != 0:
					t.Errorf("the node accepted %d calls of a client without a verified certificate", len(calls))
				}
			})
		}
	}
}
