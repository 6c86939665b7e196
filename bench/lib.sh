# Shared by the load tests in bench/: sourced, not run.
#
# Each test builds nutsgate and stock Caddy (the caddy command of the same Caddy version),
# runs configurations of both in turns for several rounds, and reports for each the median
# requests/s and the median CPU time the gateway process spent per request (from /proc),
# with their ratios to stock Caddy. On a small machine the load tool, the upstream and the
# gateway share the CPUs, so throughput is noisy; CPU per request is the steadier figure.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
conns=${2:-16}
rounds=${3:-3}

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
go build -o "$work/nutsgate" ./cmd/nutsgate
[ -n "${NO_STOCK_CADDY:-}" ] || go build -o "$work/caddy" github.com/caddyserver/caddy/v2/cmd/caddy # unless a test needs none
# Go keeps its caches where they are, so that builds after this point need no download.
export GOMODCACHE="$(go env GOMODCACHE)" GOCACHE="$(go env GOCACHE)"
export HOME=$work XDG_CONFIG_HOME=$work XDG_DATA_HOME=$work # Caddy's storage and autosave

# server_cert: a throwaway server certificate for localhost, $work/server.pem and .key.
server_cert() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
		-addext subjectAltName=DNS:localhost -keyout "$work/server.key" -out "$work/server.pem" 2>/dev/null
}

# start NAME BINARY: runs $work/NAME.caddyfile with BINARY; its pid is in pid_NAME.
start() {
	"$work/$2" run --config "$work/$1.caddyfile" >"$work/$1.log" 2>&1 &
	eval "pid_$1=$!"
}

# wait_port PORT: waits until something accepts connections on 127.0.0.1:PORT.
wait_port() {
	for _ in $(seq 100); do
		(echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "bench: nothing listens on $1; logs in $work (KEEP=1 keeps them)" >&2
	exit 1
}

# cputicks PID: user+system CPU time of a process, in clock ticks.
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure NAME PID RPS_AWK COUNT_AWK COMMAND...: runs the load COMMAND against a gateway and
# appends req/s and CPU µs per request to $work/NAME.rps and $work/NAME.cpu. RPS_AWK and
# COUNT_AWK are awk programs that print the tool's requests/s and request count.
measure() {
	local name=$1 pid=$2 rps_awk=$3 count_awk=$4 before after out
	shift 4
	before=$(cputicks "$pid")
	out=$("$@")
	after=$(cputicks "$pid")
	echo "$out" | awk "$rps_awk" >>"$work/$name.rps"
	echo "$out" | awk "$count_awk" | awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" '{print t / hz * 1e6 / $1}' >>"$work/$name.cpu"
}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

# report TITLE BASE NAME:LABEL...: prints the medians of each NAME with ratios to BASE.
report() {
	local title=$1 base=$2 base_rps base_cpu r c row
	shift 2
	base_rps=$(median <"$work/$base.rps")
	base_cpu=$(median <"$work/$base.cpu")
	printf '%-36s %9s %6s %13s %6s   (%s rounds of %s, %s connections)\n' "$title" "req/s" "ratio" "CPU µs/req" "ratio" "$rounds" "$duration" "$conns"
	for row in "$@"; do
		r=$(median <"$work/${row%%:*}.rps")
		c=$(median <"$work/${row%%:*}.cpu")
		printf '%-36s %9.0f %6.3f %13.1f %6.3f\n' "${row#*:}" "$r" "$(echo "$r / $base_rps" | bc -l)" "$c" "$(echo "$c / $base_cpu" | bc -l)"
	done
}
