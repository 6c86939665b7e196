#!/usr/bin/env bash
# Forged-token floods against token_v2 (bench/tokflood), through the built binary, with a P-521
# key in authorized_keys (the costliest signature check):
#   (a) one client (127.0.0.1, 16 connections) sends tokens whose kid names the P-521 key, each
#       with new claims and a garbage signature, while a valid client (127.0.0.1) reuses a
#       cached token;
#   (b) the same flood from 100 source addresses (127.0.0.2 to 127.0.0.101, one connection
#       each, every one under its own failure budget) while the valid client works; and, as a
#       control, the same flood with a kid that names no key, refused before any signature
#       check: the cost of the flood's requests alone, which no signature defence can lower.
# Reported for each: the gateway's signature checks a second (denied "signature" in
# nutsgate_auth_decisions_total), its "failure_budget" refusals, and the valid client's p50/p99
# alone and during the flood, in the same run. With a revision as argument the same runs are made
# against the binary of that revision first (such as the commit before the flood defences).
# Loopback only; it stops by itself.
#
#   bash bench/token_flood.sh [base revision] [flood duration, default 10s]
base=${1:-}
flood=${2:-10s}
NO_STOCK_CADDY=1
source "$(dirname "$0")/lib.sh"

go build -o "$work/tokflood" ./bench/tokflood
if [ -n "$base" ]; then
	mkdir "$work/base"
	git archive "$base" | tar -x -C "$work/base"
	(cd "$work/base" && go build -o "$work/nutsgate-base" ./cmd/nutsgate)
fi
ssh-keygen -q -t ecdsa -b 521 -N '' -C bench -f "$work/key"
"$work/nutsgate" token authorized-key --key "$work/key" --user bench >"$work/authorized_keys"
token=$("$work/nutsgate" token mint --key "$work/key" --iss bench --sub bench --aud bench --ttl 1h)

cat >"$work/upstream.caddyfile" <<CONF
{
	admin 127.0.0.1:29200
	auto_https off
	default_bind 127.0.0.1
	log {
		level ERROR
	}
}
http://127.0.0.1:29010 {
	respond "node ok"
}
CONF
cat >"$work/gw.caddyfile" <<CONF
{
	admin 127.0.0.1:29201
	auto_https off
	log {
		level ERROR
	}
}
http://:29011 {
	bind 0.0.0.0
	handle /internal/* {
		token_v2 {
			authorized_keys $work/authorized_keys
			audience bench
		}
		reverse_proxy 127.0.0.1:29010
	}
}
CONF
start upstream nutsgate
wait_port 29010

# flood BINARY LABEL ARGS...: a fresh gateway of BINARY, one tokflood run against it.
flood() {
	local bin=$1 label=$2
	shift 2
	start gw "$bin"
	wait_port 29011
	echo "== $label"
	"$work/tokflood" -url http://127.0.0.1:29011/internal/x -metrics http://127.0.0.1:29201/metrics \
		-token "$token" -flood "$flood" "$@"
	kill "$pid_gw"
	wait "$pid_gw" 2>/dev/null || true
}
for bin in ${base:+nutsgate-base} nutsgate; do
	flood "$bin" "(a) $bin: one flooding client, 16 connections" -from 127.0.0.1 -sources 1 -conns 16
	flood "$bin" "(b) $bin: 100 flooding addresses, 1 connection each" -from 127.0.0.2 -sources 100 -conns 1
done
flood nutsgate "(b, control) nutsgate: 100 flooding addresses, kid of no key" -from 127.0.0.2 -sources 100 -conns 1 -unknown-kid
