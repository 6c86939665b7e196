#!/usr/bin/env bash
# Load test of the node-to-node path against stock Caddy with ab (Debian package
# apache2-utils), over TLS with a client certificate (the quick start's demo PKI) and
# keep-alive connections: stock Caddy verifying the client certificate and forwarding it in
# X-SSL-CERT, and nutsgate doing the same with mtls_ident (identity, deny lists, X-SSL-CERT)
# and client_rate_limit (a limit no request reaches). See lib.sh for what is measured.
#
#   bash bench/n2n.sh [duration, default 10s] [connections, default 16] [rounds, default 3]
command -v ab >/dev/null || { echo "bench: ab is needed (apt-get install apache2-utils)" >&2; exit 1; }
source "$(dirname "$0")/lib.sh"

pki=quickstart/pki
cat "$pki/node-a.pem" "$pki/node-a.key" >"$work/client.pem"
server_cert

site() { # name admin-port site-port body
	cat >"$work/$1.caddyfile" <<CONF
{
	admin 127.0.0.1:$2
	default_bind 127.0.0.1
	auto_https disable_redirects
	servers {
		protocols h1 h2
	}
	log {
		level ERROR
	}
}
https://localhost:$3 {
	tls $work/server.pem $work/server.key {
		client_auth {
			mode require_and_verify
			trust_pool file $PWD/$pki/ca.pem
		}
	}
$4
}
CONF
}
cat >"$work/upstream.caddyfile" <<CONF
{
	admin 127.0.0.1:29300
	log {
		level ERROR
	}
}
http://127.0.0.1:29200 {
	respond "node ok"
}
CONF
# What an operator would write with stock Caddy: forward the certificate to the node.
site stock 29301 29201 '	reverse_proxy 127.0.0.1:29200 {
		header_up X-SSL-CERT {http.request.tls.client.certificate_der_base64}
	}'
site n2n 29302 29202 '	mtls_ident {
		require
	}
	client_rate_limit {
		rate 1000000/1s
	}
	reverse_proxy 127.0.0.1:29200'
start upstream caddy
start stock caddy
start n2n nutsgate
for port in 29200 29201 29202; do wait_port $port; done
curl -sf --cacert "$work/server.pem" --cert "$work/client.pem" https://localhost:29202/n2n/x >/dev/null ||
	{ echo "bench: the n2n gateway does not answer" >&2; exit 1; }

rps='/Requests per second/ {print $4}'
count='/Complete requests/ {print $3}'
load() { ab -q -k -c "$conns" -t "${duration%s}" -n 100000000 -E "$work/client.pem" "$@" 2>/dev/null; }
duration=2s load https://localhost:29201/n2n/x >/dev/null # warm up
for _ in $(seq "$rounds"); do
	measure stock "$pid_stock" "$rps" "$count" load https://localhost:29201/n2n/x
	measure n2n "$pid_n2n" "$rps" "$count" load https://localhost:29202/n2n/x
done
report "mTLS proxy to upstream (keep-alive)" stock "stock:stock caddy, cert verified+forwarded" \
	"n2n:nutsgate, mtls_ident + rate limit"
