#!/usr/bin/env bash
# Load test of token_v2 against stock Caddy, measured in the same run with wrk
# (Debian package wrk). Builds both binaries, starts an upstream, and proxies
# to it three ways: stock Caddy, nutsgate without auth, nutsgate with
# token_v2 (the client reuses one token, as clients do). The configurations
# take turns for several rounds. On a small machine wrk, the upstream and the
# gateway share the CPUs, so throughput is noisy; the CPU time the gateway
# process spends per request (from /proc) is the steadier figure. Prints the
# medians of both and their ratios to stock Caddy.
#
#   bash bench/token_v2.sh [duration, default 10s] [connections, default 16] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
conns=${2:-16}
rounds=${3:-3}
command -v wrk >/dev/null || { echo "bench: wrk is needed (apt-get install wrk)" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
go build -o "$work/nutsgate" ./cmd/nutsgate
go build -o "$work/caddy" github.com/caddyserver/caddy/v2/cmd/caddy
export HOME=$work XDG_CONFIG_HOME=$work XDG_DATA_HOME=$work # Caddy's storage and autosave

ssh-keygen -q -t ed25519 -N '' -C bench -f "$work/key"
"$work/nutsgate" token authorized-key --key "$work/key" --user bench > "$work/authorized_keys"
token=$("$work/nutsgate" token mint --key "$work/key" --iss bench --sub bench --aud bench --ttl 1h)

site() { # name admin-port site-port body
	cat > "$work/$1.caddyfile" <<CONF
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

"$work/caddy" run --config "$work/upstream.caddyfile" >"$work/upstream.log" 2>&1 &
"$work/caddy" run --config "$work/stock.caddyfile" >"$work/stock.log" 2>&1 &
pid_stock=$!
"$work/nutsgate" run --config "$work/plain.caddyfile" >"$work/plain.log" 2>&1 &
pid_plain=$!
"$work/nutsgate" run --config "$work/token.caddyfile" >"$work/token.log" 2>&1 &
pid_token=$!
pid_refused=$pid_token
for port in 29000 29001 29002 29003; do
	for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" http://127.0.0.1:29003/internal/x)
[ "$code" = 200 ] || { echo "bench: token_v2 gateway answered $code" >&2; exit 1; }

# cputicks prints the user+system CPU time of a process, in clock ticks.
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# measure runs wrk against a gateway and appends req/s and CPU µs per request.
measure() { # name pid wrk-args...
	local name=$1 pid=$2 before after out
	shift 2
	before=$(cputicks "$pid")
	out=$(wrk -t1 -c"$conns" -d"$duration" "$@")
	after=$(cputicks "$pid")
	echo "$out" | awk '/Requests\/sec/ {print $2}' >>"$work/$name.rps"
	echo "$out" | awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" \
		'/requests in/ {print t / hz * 1e6 / $1}' >>"$work/$name.cpu"
}
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
wrk -t1 -c"$conns" -d2s http://127.0.0.1:29001/ >/dev/null # warm up
for round in $(seq "$rounds"); do
	measure stock "$pid_stock" http://127.0.0.1:29001/internal/x
	measure plain "$pid_plain" http://127.0.0.1:29002/internal/x
	measure token "$pid_token" -H "Authorization: Bearer $token" http://127.0.0.1:29003/internal/x
	measure refused "$pid_refused" http://127.0.0.1:29003/internal/x
done
stock_rps=$(median <"$work/stock.rps")
stock_cpu=$(median <"$work/stock.cpu")
printf '%-36s %9s %6s %13s %6s   (%s rounds of %s, %s connections)\n' "proxy to upstream" "req/s" "ratio" "CPU µs/req" "ratio" "$rounds" "$duration" "$conns"
for row in "stock caddy:stock" "nutsgate, no auth:plain" "nutsgate, token_v2 (reused token):token" "nutsgate, token_v2 refusal (401):refused"; do
	r=$(median <"$work/${row##*:}.rps")
	c=$(median <"$work/${row##*:}.cpu")
	printf '%-36s %9.0f %6.3f %13.1f %6.3f\n' "${row%%:*}" "$r" "$(echo "$r / $stock_rps" | bc -l)" "$c" "$(echo "$c / $stock_cpu" | bc -l)"
done
