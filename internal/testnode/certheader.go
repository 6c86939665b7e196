package testnode

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// pemCertificateMarker is what the node looks for to tell PEM from base64 DER.
const pemCertificateMarker = "-----BEGIN CERTIFICATE-----"

// ParseCertHeader parses the values of the forwarded client certificate
// header exactly as the Nuts node does when TLS is offloaded
// (network/transport/grpc/tls_offloading.go):
//
//   - there must be exactly one value;
//   - the value is url.QueryUnescape'd; if the result contains
//     "-----BEGIN CERTIFICATE-----" it is read as PEM (every CERTIFICATE block,
//     other block types skipped, anything undecodable an error);
//   - otherwise the original, not unescaped, value is base64.StdEncoding
//     decoded and parsed as one DER certificate;
//   - exactly one certificate must result.
//
// Consequences worth knowing: PEM must be URL-escaped (a bare '+' turns into
// a space), a PEM chain is refused, and URL-escaped base64 DER is refused.
func ParseCertHeader(values []string) (*x509.Certificate, error) {
	if len(values) != 1 {
		return nil, fmt.Errorf("expected exactly 1 value for header (found %d)", len(values))
	}
	unescaped, err := url.QueryUnescape(values[0])
	if err != nil {
		return nil, errors.New("TLS client header escaping is invalid")
	}
	var certs []*x509.Certificate
	if strings.Contains(unescaped, pemCertificateMarker) {
		certs, err = parsePEMCerts([]byte(unescaped))
	} else {
		certs, err = parseBase64DERCert(values[0])
	}
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("expected exactly 1 client certificate in header, found %d", len(certs))
	}
	return certs[0], nil
}

// parseBase64DERCert reads one certificate from standard base64 of its DER.
func parseBase64DERCert(value string) ([]*x509.Certificate, error) {
	der, err := base64.StdEncoding.DecodeString(value)
	if err != nil {
		return nil, fmt.Errorf("unable to base64 decode client cert header: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("unable to DER decode client cert: %w", err)
	}
	return []*x509.Certificate{cert}, nil
}

// parsePEMCerts reads every CERTIFICATE block of data, as the node's
// core.ParseCertificates does: trailing bytes that hold no PEM block (even a
// lone newline) are an error.
func parsePEMCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for len(data) > 0 {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("invalid client certificate(s) in header: unable to decode PEM encoded data")
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("invalid client certificate(s) in header: unable to parse certificate: %w", err)
		}
		certs = append(certs, cert)
	}
	return certs, nil
}
