#!/usr/bin/env bash
# Log volume under a refusal flood (issue item 9): the built nutsgate with a token_v2 site is
# flooded with wrk, every request carrying a token signed by a key that is not in
# authorized_keys (token_v2 reason unknown_key), for a fixed time. It reports the refusals
# answered (wrk's count and the exact nutsgate_auth_decisions_total series), the log bytes and
# "access denied" lines the gateway wrote meanwhile, the dropped lines counted in `suppressed`
# fields (those lines' and the `log lines suppressed` summaries'), and the bytes per second and
# per refusal.
# Loopback only; it stops by itself.
#
#   bash bench/refusal_log.sh [duration, default 10s] [connections, default 16]
command -v wrk >/dev/null || { echo "bench: wrk is needed (apt-get install wrk)" >&2; exit 1; }
command -v curl >/dev/null || { echo "bench: curl is needed" >&2; exit 1; }
source "$(dirname "$0")/lib.sh"

ssh-keygen -q -t ed25519 -N '' -C bench -f "$work/key"
ssh-keygen -q -t ed25519 -N '' -C stranger -f "$work/stranger"
"$work/nutsgate" token authorized-key --key "$work/key" --user bench >"$work/authorized_keys"
# Signed by the stranger's key, so its kid names no listed key.
token=$("$work/nutsgate" token mint --key "$work/stranger" --iss bench --sub bench --aud bench --ttl 1h)

cat >"$work/flood.caddyfile" <<CONF
{
	admin 127.0.0.1:29201
	auto_https off
	default_bind 127.0.0.1
	log {
		level INFO
	}
}
http://127.0.0.1:29200 {
	handle /internal/* {
		token_v2 {
			authorized_keys $work/authorized_keys
			audience bench
		}
		respond "granted"
	}
}
CONF
start flood nutsgate
wait_port 29200
wait_port 29201

series='nutsgate_auth_decisions_total{reason="unknown_key",result="denied"}'
refusals() { curl -s http://127.0.0.1:29201/metrics | awk -v s="$series" '$1 == s {print $2 + 0; f = 1} END {if (!f) print 0}'; }
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" http://127.0.0.1:29200/internal/x)
[ "$code" = 401 ] || { echo "bench: the gateway answered $code, want 401" >&2; exit 1; }
sleep 1.2 # a fresh sampling window: the probe's refusal does not count against the flood

log="$work/flood.log"
bytes0=$(stat -c %s "$log")
lines0=$(grep -c '"msg":"access denied"' "$log" || true)
metric0=$(refusals)
t0=$(date +%s.%N)
out=$(wrk -t1 -c"$conns" -d"$duration" -H "Authorization: Bearer $token" http://127.0.0.1:29200/internal/x)
t1=$(date +%s.%N)
sleep 1.2 # a summary of the last window's dropped lines, if the gateway writes one
bytes1=$(stat -c %s "$log")
lines1=$(grep -c '"msg":"access denied"' "$log" || true)
suppressed=$(tail -c +$((bytes0 + 1)) "$log" | awk '/"access denied"/ && match($0, /"suppressed":[0-9]+/) {
	s += substr($0, RSTART + 13, RLENGTH - 13) } END {print s + 0}')
metric1=$(refusals)

requests=$(echo "$out" | awk '/requests in/ {print $1}')
non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
awk -v b=$((bytes1 - bytes0)) -v l=$((lines1 - lines0)) -v m=$((metric1 - metric0)) \
	-v s="$suppressed" -v n="$requests" -v e="${non2xx:-0}" -v t="$(echo "$t1 - $t0" | bc -l)" 'BEGIN {
	printf "flood of %.1f s, %d connections, token of an unknown kid (token_v2 reason unknown_key)\n", t, '"$conns"'
	printf "%-40s %14d  (%.0f/s)\n", "requests (wrk)", n, n / t
	printf "%-40s %14d\n", "non-2xx answers (wrk)", e
	printf "%-40s %14d\n", "refusals counted (metric delta)", m
	printf "%-40s %14d\n", "\"access denied\" lines logged", l
	printf "%-40s %14d\n", "dropped lines counted (suppressed)", s
	printf "%-40s %14d\n", "log bytes written", b
	printf "%-40s %14.0f\n", "log bytes per second", b / t
	printf "%-40s %14.2f\n", "log bytes per refusal", (m ? b / m : 0)
}'
