#!/usr/bin/env bash
# Memory a peer that never reads can pin in the gateway (bench/unreadpeer): over one HTTP/2
# connection with a client certificate (the quick start's demo PKI) it opens N gRPC streams of
# StreamingOutputCall, each asking the stand-in node (nuts-testnode) for 8 MiB, and never sends
# a WINDOW_UPDATE. Reported: the gateway's resident memory (VmRSS) before and once settled,
# the streams the gateway refused, and a unary call of another peer (node-b) before and while
# the streams are held. Two gateways of the same binary, one after the other:
#   unbounded: transport http, max_open 1000000 - what the gateway did before max_open and
#              nuts_node (Go's 4 MiB stream window towards the node, no bound per client);
#   defaults:  transport nuts_node and mtls_ident's default max_open, as the shipped configs.
# Loopback only; it stops by itself.
#
#   bash bench/unreadpeer.sh [streams, default 150]
streams=${1:-150}
NO_STOCK_CADDY=1
source "$(dirname "$0")/lib.sh"

pki=quickstart/pki
go build -o "$work/nuts-testnode" ./cmd/nuts-testnode
go build -o "$work/unreadpeer" ./bench/unreadpeer
server_cert

site() { # name admin-port site-port max_open-line transport
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
	mtls_ident {
		require
		$4
	}
	reverse_proxy h2c://127.0.0.1:29555 {
		flush_interval -1
		transport $5 {
			read_timeout 0
			write_timeout 0
		}
	}
}
CONF
}
site unbounded 29310 29311 'max_open 1000000' http
site defaults 29320 29321 '' nuts_node

"$work/nuts-testnode" --grpc 127.0.0.1:29555 --public 127.0.0.1:29556 --internal 127.0.0.1:29557 >"$work/node.log" 2>&1 &
wait_port 29555
for cfg in unbounded:29311 defaults:29321; do
	name=${cfg%%:*} port=${cfg#*:}
	start "$name" nutsgate
	wait_port "$port"
	pid=pid_$name
	echo "== $name: $streams streams of 8 MiB, never read"
	"$work/unreadpeer" -addr "127.0.0.1:$port" -ca "$work/server.pem" -pid "${!pid}" -streams "$streams" \
		-cert "$pki/node-a.pem" -key "$pki/node-a.key" -other-cert "$pki/node-b.pem" -other-key "$pki/node-b.key"
	kill "${!pid}"
	wait "${!pid}" 2>/dev/null || true
done
