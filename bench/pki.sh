#!/usr/bin/env bash
# Load test of revocation checking at the TLS handshake: new connections per second (full
# handshake with a client certificate, no session resumption, one request each) to two
# nutsgate processes in turns, one verifying the client certificate only, the other also with
# `verifier nuts_pki` (the CRLs of the client's intermediate and root, held, and a denylist of
# 100 entries). Both identify the client with mtls_ident, which also consults the revocation
# verdicts per request in the second. See lib.sh for what is measured.
#
#   bash bench/pki.sh [duration, default 10s] [connections, default 16] [rounds, default 3]
NO_STOCK_CADDY=1
source "$(dirname "$0")/lib.sh"

go build -o "$work/handshakes" ./bench/handshakes
"$work/handshakes" pki -dir "$work" -port 29400 &
wait_port 29400

site() { # name admin-port site-port global-options verifier
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
$4
}
https://localhost:$3 {
	tls $work/server.pem $work/server.key {
		client_auth {
			mode require_and_verify
			trust_pool file $work/ca.pem
			$5
		}
	}
	handle /n2n/* {
		mtls_ident {
			require
		}
		respond "node ok"
	}
}
CONF
}
site plain 29401 29411 '' ''
site pki 29402 29412 "	nutsgate {
		state_dir $work/state
		pki {
			denylist {
				url http://127.0.0.1:29400/denylist.jws
				trusted_signer $work/signer.pem
			}
		}
	}" 'verifier nuts_pki'
start plain nutsgate
start pki nutsgate
for port in 29411 29412; do wait_port $port; done

rate='/^handshakes/ {print $4}'
count='/^handshakes/ {print $2}'
load() { "$work/handshakes" load -addr "$1" -dir "$work" -duration "$duration" -conns "$conns"; }
duration=2s load 127.0.0.1:29412 >/dev/null # warm up: fetches the CRLs and the list
"$work/nutsgate" pki status --address 127.0.0.1:29402
for _ in $(seq "$rounds"); do
	measure plain "$pid_plain" "$rate" "$count" load 127.0.0.1:29411
	measure pki "$pid_pki" "$rate" "$count" load 127.0.0.1:29412
done
report "new mTLS connections (1 request each)" plain "plain:client certificate verified" \
	"pki:verified + verifier nuts_pki"
