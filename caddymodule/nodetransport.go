package caddymodule

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/dustin/go-humanize"
)

func init() {
	caddy.RegisterModule(NodeTransport{})
}

// Bounds and default of the nuts_node transport's stream_buffer.
const (
	defaultStreamBuffer = 512 << 10
	minStreamBuffer     = 16 << 10
	maxStreamBuffer     = 1<<31 - 1 // the largest HTTP/2 flow-control window
)

// NodeTransport is reverse_proxy's `http` transport with a bound on what
// the gateway buffers of each HTTP/2 (and h2c) response stream from the
// node: the stream's receive window, which the gateway advertises to the
// node. Go's default is 4 MiB a stream, so a peer that opens streams and
// never reads them pins 4 MiB of the gateway's memory for each; with the
// default 512 KiB and mtls_ident's default max_open of 100, one client
// pins at most about 50 MiB. A stream whose client reads is not slowed on
// loopback: the window is given back as the client reads.
//
// Every setting of the `http` transport applies as documented for it, and
// h2c:// upstreams work as with it. HTTP/1.1 upstreams are not affected
// (the proxy's copy buffer bounds them). The window of the whole connection
// keeps Go's default, so a client that never reads cannot stall the streams
// of other clients on the same connection to the node.
//
// Caddyfile:
//
//	reverse_proxy h2c://127.0.0.1:5556 {
//	    transport nuts_node {
//	        stream_buffer <size>    # default 512KiB; 16KiB to 2GiB
//	        <any subdirective of transport http>
//	    }
//	}
type NodeTransport struct {
	reverseproxy.HTTPTransport

	// How many bytes of a response stream from the node the gateway buffers
	// while the client does not read them (the HTTP/2 stream receive
	// window). Default: 512 KiB.
	StreamBuffer int `json:"stream_buffer,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (NodeTransport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.transport.nuts_node",
		New: func() caddy.Module { return new(NodeTransport) },
	}
}

// Provision builds the http transport and bounds its stream windows. Go's
// HTTP/2 transports (the bundled one and x/net's, which Caddy configures)
// read the bound when they open a connection.
func (t *NodeTransport) Provision(ctx caddy.Context) error {
	size := t.StreamBuffer
	if size == 0 {
		size = defaultStreamBuffer
	}
	if size < minStreamBuffer || size > maxStreamBuffer {
		return fmt.Errorf("stream_buffer %d is not between %d and %d bytes", size, minStreamBuffer, maxStreamBuffer)
	}
	if err := t.HTTPTransport.Provision(ctx); err != nil {
		return err
	}
	if t.Transport.HTTP2 == nil {
		t.Transport.HTTP2 = new(http.HTTP2Config)
	}
	t.Transport.HTTP2.MaxReceiveBufferPerStream = size
	return nil
}

// UnmarshalCaddyfile sets up the transport from Caddyfile tokens: its own
// subdirective, and every other one as the http transport reads it (the
// stream_buffer lines are taken out of the tokens, and the rest is handed to
// the http transport as it is).
func (t *NodeTransport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume transport name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if d.Val() != "stream_buffer" {
			d.RemainingArgs()
			for inner := d.Nesting(); d.NextBlock(inner); { // its block, if any
			}
			continue
		}
		if t.StreamBuffer != 0 {
			return d.Err("stream_buffer already specified")
		}
		args := d.RemainingArgs()
		if len(args) != 1 {
			return d.ArgErr()
		}
		size, err := humanize.ParseBytes(args[0])
		if err != nil || size < minStreamBuffer || size > maxStreamBuffer {
			return d.Errf("stream_buffer %q is not a size between 16KiB and 2GiB", args[0])
		}
		if last := d.Token(); d.Next() {
			next := d.Token()
			d.Prev()
			if next.Text == "{" && next.File == last.File && next.Line == last.Line {
				return d.Err("stream_buffer takes no block")
			}
		}
		t.StreamBuffer = int(size)
		d.DeleteN(1 + len(args))
	}
	d.Reset()
	return t.HTTPTransport.UnmarshalCaddyfile(d)
}

// Interface guards
var (
	_ caddy.Provisioner                                = (*NodeTransport)(nil)
	_ caddy.CleanerUpper                               = (*NodeTransport)(nil)
	_ http.RoundTripper                                = (*NodeTransport)(nil)
	_ caddyfile.Unmarshaler                            = (*NodeTransport)(nil)
	_ reverseproxy.TLSTransport                        = (*NodeTransport)(nil)
	_ reverseproxy.H2CTransport                        = (*NodeTransport)(nil)
	_ reverseproxy.HealthCheckSchemeOverriderTransport = (*NodeTransport)(nil)
	_ reverseproxy.ProxyProtocolTransport              = (*NodeTransport)(nil)
)
