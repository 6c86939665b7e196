#!/usr/bin/env bash
# Load test of distributed rate limits: requests/s and p99 latency of a route whose
# client_rate_limit keeps its buckets in Redis (`distributed`, one round trip per request)
# against the same route with this replica's own buckets, in turns in the same run, on one
# nutsgate with a redis-server of its own (loopback, no persistence). Plain HTTP, keep-alive,
# a limit no request reaches, so that every request is an allowed one. Needs wrk and
# redis-server.
#
#   bash bench/fleet.sh [duration, default 10s] [connections, default 16] [rounds, default 3]
command -v wrk >/dev/null || { echo "bench: wrk is needed (apt-get install wrk)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "bench: redis-server is needed (apt-get install redis-server)" >&2; exit 1; }
NO_STOCK_CADDY=1
source "$(dirname "$0")/lib.sh"

redis-server --port 29500 --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
wait_port 29500
cat >"$work/fleet.caddyfile" <<CONF
{
	admin 127.0.0.1:29501
	log {
		level ERROR
	}
	nutsgate {
		redis {
			address redis://127.0.0.1:29500/0
		}
	}
}
http://127.0.0.1:29511 {
	client_rate_limit {
		key {remote_host}
		rate 100000000/1s
		zone local
	}
	respond "node ok"
}
http://127.0.0.1:29512 {
	client_rate_limit {
		key {remote_host}
		rate 100000000/1s
		zone distributed
		distributed
	}
	respond "node ok"
}
CONF
start fleet nutsgate
for port in 29511 29512; do wait_port $port; done
sleep 1 # the health check finds Redis up

load() { wrk -t2 -c"$conns" -d"$duration" --latency "http://127.0.0.1:$1/" 2>/dev/null; }
round() { # name port
	local out
	out=$(load "$2")
	echo "$out" | awk '/^Requests\/sec/ {print $2}' >>"$work/$1.rps"
	echo "$out" | awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/, "", v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/, "", v)} else if (v ~ /s$/) {sub(/s$/, "", v); v*=1000}; print v}' >>"$work/$1.p99"
}
duration=2s load 29512 >/dev/null # warm up
for _ in $(seq "$rounds"); do
	round local 29511
	round distributed 29512
done
fallback=$(curl -s http://127.0.0.1:29501/metrics | awk '/^nutsgate_rate_limit_fallback_total/ {print $2}')
lr=$(median <"$work/local.rps") dr=$(median <"$work/distributed.rps")
lp=$(median <"$work/local.p99") dp=$(median <"$work/distributed.p99")
printf '%-34s %10s %7s %10s %7s   (%s rounds of %s, %s connections)\n' "client_rate_limit" "req/s" "ratio" "p99 ms" "ratio" "$rounds" "$duration" "$conns"
printf '%-34s %10.0f %7.3f %10.2f %7.3f\n' "this replica's buckets" "$lr" 1 "$lp" 1
printf '%-34s %10.0f %7.3f %10.2f %7.3f\n' "distributed (Redis)" "$dr" "$(echo "$dr / $lr" | bc -l)" "$dp" "$(echo "$dp / $lp" | bc -l)"
echo "requests decided locally because Redis did not answer in time: ${fallback:-0}"
