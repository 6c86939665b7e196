package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// The nuts_node transport reads its own stream_buffer and every subdirective of the http
// transport, and takes h2c:// upstreams as the http transport does.
func TestNodeTransportCaddyfile(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`:80 {
	reverse_proxy h2c://127.0.0.1:5556 {
		transport nuts_node
	}
}`, `"transport":{"protocol":"nuts_node","versions":["h2c","2"]}`},
		{`:80 {
	reverse_proxy h2c://127.0.0.1:5556 {
		flush_interval -1
		transport nuts_node {
			read_timeout 0
			stream_buffer 256KiB
			keepalive_idle_conns 3
			write_timeout 5s
		}
	}
}`, `"transport":{"keep_alive":{"max_idle_conns":3},"protocol":"nuts_node","stream_buffer":262144,"versions":["h2c","2"],"write_timeout":5000000000}`},
	} {
		out, err := adapt(tc.body)
		if err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("adapted config lacks %s:\n%s", tc.want, out)
		}
	}
	for _, tc := range []struct{ body, err string }{
		{":80 {\n reverse_proxy h2c://a:1 {\n transport nuts_node {\n stream_buffer 1KiB\n }\n }\n}", `stream_buffer "1KiB" is not a size between 16KiB and 2GiB`},
		{":80 {\n reverse_proxy h2c://a:1 {\n transport nuts_node {\n stream_buffer 3GiB\n }\n }\n}", `stream_buffer "3GiB" is not a size`},
		{":80 {\n reverse_proxy h2c://a:1 {\n transport nuts_node {\n stream_buffer lots\n }\n }\n}", `stream_buffer "lots" is not a size`},
		{":80 {\n reverse_proxy h2c://a:1 {\n transport nuts_node {\n stream_buffer\n }\n }\n}", "wrong argument count"},
		{":80 {\n reverse_proxy h2c://a:1 {\n transport nuts_node {\n stream_buffer 1MiB 2MiB\n }\n }\n}", "wrong argument count"},
		{":80 {\n reverse_proxy h2c://a:1 {\n transport nuts_node {\n stream_buffer 1MiB\n stream_buffer 1MiB\n }\n }\n}", "stream_buffer already specified"},
		{":80 {\n reverse_proxy h2c://a:1 {\n transport nuts_node {\n read_timeout soon\n }\n }\n}", "Caddyfile:4"},
		{":80 {\n reverse_proxy h2c://a:1 {\n transport nuts_node {\n bogus 1\n }\n }\n}", "unrecognized subdirective bogus"},
		{":80 {\n reverse_proxy h2c://a:1 {\n transport nuts_node extra\n }\n}", "wrong argument count"},
		{":80 {\n reverse_proxy h2c://a:1 {\n transport nuts_node {\n stream_buffer 1MiB {\n }\n }\n }\n}", "stream_buffer takes no block"},
	} {
		_, err := adapt(tc.body)
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%q: error %v, want one naming the file and %q", tc.body, err, tc.err)
		}
	}
}

// Provision bounds the stream receive window of the transport it builds: 512 KiB by default.
func TestNodeTransportProvision(t *testing.T) {
	for _, tc := range []struct{ set, want int }{{0, 512 << 10}, {64 << 10, 64 << 10}} {
		tr := &NodeTransport{StreamBuffer: tc.set}
		if err := tr.EnableH2C(); err != nil {
			t.Fatal(err)
		}
		if err := tr.Provision(caddy.Context{Context: context.Background()}); err != nil {
			t.Fatal(err)
		}
		if tr.Transport == nil || tr.Transport.HTTP2 == nil || tr.Transport.HTTP2.MaxReceiveBufferPerStream != tc.want {
			t.Errorf("stream_buffer %d: transport HTTP/2 config %+v, want MaxReceiveBufferPerStream %d", tc.set, tr.Transport.HTTP2, tc.want)
		}
		if tr.Transport.HTTP2 != nil && tr.Transport.HTTP2.MaxReceiveBufferPerConnection != 0 {
			t.Errorf("the connection window was changed: %d", tr.Transport.HTTP2.MaxReceiveBufferPerConnection)
		}
		_ = tr.Cleanup()
	}
	if err := (&NodeTransport{StreamBuffer: 100}).Provision(caddy.Context{Context: context.Background()}); err == nil || !strings.Contains(err.Error(), "stream_buffer 100") {
		t.Errorf("stream_buffer 100 (JSON): error %v", err)
	}
}

// FuzzNodeTransportCaddyfile checks that the nuts_node transport reads any block without
// stream_buffer exactly as the http transport does: the same error, or the same settings.
func FuzzNodeTransportCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"read_timeout 0\nwrite_timeout 0",
		"stream_buffer 1MiB\nkeepalive off",
		"tls {\n}\nversions h2c 2",
		"dial_timeout 3s\nresolvers 1.1.1.1",
		"tls_trust_pool file {\npem_file a.pem\n}\nmax_conns_per_host 3",
		"a {\nb {\nc\n}\n}",
		"read_buffer",
	} {
		f.Add(seed)
	}
	errLex := errors.New("not Caddyfile tokens")
	parse := func(name, body string, u caddyfile.Unmarshaler) error {
		tokens, err := caddyfile.Tokenize([]byte(name+" {\n"+body+"\n}"), "Caddyfile")
		if err != nil {
			return errLex
		}
		return u.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
	}
	f.Fuzz(func(t *testing.T, body string) {
		var ours NodeTransport
		errOurs := parse("nuts_node", body, &ours)
		if errOurs == errLex || strings.Contains(body, "stream_buffer") {
			return
		}
		var theirs reverseproxy.HTTPTransport
		errTheirs := parse("http", body, &theirs)
		if (errOurs == nil) != (errTheirs == nil) {
			t.Fatalf("nuts_node: %v; http: %v", errOurs, errTheirs)
		}
		if errOurs != nil {
			return
		}
		a, errA := json.Marshal(ours.HTTPTransport)
		b, errB := json.Marshal(theirs)
		if errA != nil || errB != nil || string(a) != string(b) {
			t.Fatalf("nuts_node read %s (%v), http read %s (%v)", a, errA, b, errB)
		}
	})
}
