#!/usr/bin/env bash
# Throw-away certificates for a trial run of Caddyfile.example (or deploy/compose.yaml): a CA of
# its own, and every certificate and key the Caddyfile reads, with the names it expects.
#
#   deploy/trial-certs.sh DIR        # then: NUTSGATE_TLS=DIR nutsgate validate --config Caddyfile.example
#
# DIR gets:
#   ca.pem, ca.key                 the trial CA (DIR/ca.key signs everything below; keep it or delete it)
#   public.pem, public.key         $NUTS_PUBLIC_HOST (default nuts.example.org)
#   network.pem, network.key       $NUTS_N2N_HOST (default n2n.example.org), server and client use,
#                                  as a network certificate is (the node uses it for its outbound calls)
#   network-truststore.pem         the trial CA: the clients the network sites accept
#   internal.pem, internal.key     $NUTSGATE_INTERNAL_HOST (default nuts-internal.example.org), localhost, 127.0.0.1
#   client.pem, client.key         another node's certificate (CN=trial-peer), for calls to /n2n and gRPC
#
# NOT for production: the keys are readable by every user (0644), so that the gateway's and the
# node's container users can read them from a bind mount, and the certificates expire in 30 days.
# Needs openssl.
set -euo pipefail

if [ $# -ne 1 ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
dir=$1
public_host=${NUTS_PUBLIC_HOST:-nuts.example.org}
n2n_host=${NUTS_N2N_HOST:-n2n.example.org}
internal_host=${NUTSGATE_INTERNAL_HOST:-nuts-internal.example.org}
days=30

mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The CA.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
	-subj "/O=nutsgate trial/CN=nutsgate trial CA" \
	-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" \
	-keyout "$dir/ca.key" -out "$dir/ca.pem" 2>"$work/log" || { cat "$work/log" >&2; exit 1; }

# leaf NAME CN SAN EKU: a key and a certificate signed by the CA.
leaf() {
	local name=$1 cn=$2 san=$3 eku=$4
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-subj "/C=NL/O=nutsgate trial/CN=$cn" -keyout "$dir/$name.key" -out "$work/$name.csr" 2>"$work/log" \
		|| { cat "$work/log" >&2; exit 1; }
	printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s' \
		"$eku" "${san:+subjectAltName=$san
}" >"$work/$name.ext"
	openssl x509 -req -in "$work/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days "$days" -extfile "$work/$name.ext" \
		-out "$dir/$name.pem" 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
}

leaf public "$public_host" "DNS:$public_host" serverAuth
leaf network "$n2n_host" "DNS:$n2n_host" serverAuth,clientAuth
leaf internal "$internal_host" "DNS:$internal_host,DNS:localhost,IP:127.0.0.1" serverAuth
leaf client trial-peer "" clientAuth
cp "$dir/ca.pem" "$dir/network-truststore.pem"
chmod 0644 "$dir"/*.pem "$dir"/*.key

echo "trial certificates in $dir (CA: $dir/ca.pem; NOT for production)"
