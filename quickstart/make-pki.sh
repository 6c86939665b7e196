#!/usr/bin/env bash
# Makes the quick start's demo PKI in quickstart/pki: a CA standing in for the Nuts network
# CA, and client certificates for two nodes. DEMO ONLY: the private keys are published in
# this repository; never trust this CA anywhere else. Needs openssl.
set -euo pipefail
cd "$(dirname "$0")/pki"
days=3650
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
	-keyout ca.key -out ca.pem -subj "/O=nutsgate quickstart/CN=Demo Network CA" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
for node in node-a node-b; do
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$node.key" -out "$node.csr" -subj "/C=NL/O=nutsgate quickstart/CN=$node.quickstart"
	openssl x509 -req -in "$node.csr" -CA ca.pem -CAkey ca.key -days "$days" -out "$node.pem" \
		-extfile <(printf 'keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=DNS:%s.quickstart\n' "$node")
	rm "$node.csr"
done
rm -f ca.srl
