#!/usr/bin/env bash
# Load test of token_v2 against stock Caddy with wrk (Debian package wrk): stock Caddy, nutsgate
# without auth, nutsgate with token_v2 (the client reuses one token, as clients do), and
# token_v2 refusals, each proxying to the same upstream. See lib.sh for what is measured.
#
#   bash bench/token_v2.sh [duration, default 10s] [connections, default 16] [rounds, default 3]
command -v wrk >/dev/null || { echo "bench: wrk is needed (apt-get install wrk)" >&2; exit 1; }
source "$(dirname "$0")/lib.sh"

ssh-keygen -q -t ed25519 -N '' -C bench -f "$work/key"
"$work/nutsgate" token authorized-key --key "$work/key" --user bench >"$work/authorized_keys"
token=$("$work/nutsgate" token mint --key "$work/key" --iss bench --sub bench --aud bench --ttl 1h)

site() { # name admin-port site-port body
	cat >"$work/$1.caddyfile" <<CONF
{
	admin 127.0.0.1:$2
	auto_https off
	default_bind 127.0.0.1
	log {
		level ERROR
	}
}
http://127.0.0.1:$3 {
$4
}
CONF
}
site upstream 29100 29000 '	respond "node ok"'
site stock 29101 29001 '	reverse_proxy 127.0.0.1:29000'
site plain 29102 29002 '	reverse_proxy 127.0.0.1:29000'
site token 29103 29003 "	handle /internal/* {
		token_v2 {
			authorized_keys $work/authorized_keys
			audience bench
		}
		reverse_proxy 127.0.0.1:29000
	}"
start upstream caddy
start stock caddy
start plain nutsgate
start token nutsgate
for port in 29000 29001 29002 29003; do wait_port $port; done
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" http://127.0.0.1:29003/internal/x)
[ "$code" = 200 ] || { echo "bench: token_v2 gateway answered $code" >&2; exit 1; }

rps='/Requests\/sec/ {print $2}'
count='/requests in/ {print $1}'
load() { wrk -t1 -c"$conns" -d"$duration" "$@"; }
load -d2s http://127.0.0.1:29001/ >/dev/null # warm up
for _ in $(seq "$rounds"); do
	measure stock "$pid_stock" "$rps" "$count" load http://127.0.0.1:29001/internal/x
	measure plain "$pid_plain" "$rps" "$count" load http://127.0.0.1:29002/internal/x
	measure token "$pid_token" "$rps" "$count" load -H "Authorization: Bearer $token" http://127.0.0.1:29003/internal/x
	measure refused "$pid_token" "$rps" "$count" load http://127.0.0.1:29003/internal/x
done
report "proxy to upstream" stock "stock:stock caddy" "plain:nutsgate, no auth" \
	"token:nutsgate, token_v2 (reused token)" "refused:nutsgate, token_v2 refusal (401)"
