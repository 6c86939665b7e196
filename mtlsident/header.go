package mtlsident

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Format is how a certificate is written into the forwarding header.
type Format string

// The formats a Nuts node reads.
const (
	// FormatPEM is the URL-escaped PEM of the certificate, as nginx's
	// $ssl_client_escaped_cert: the node query-unescapes the value and
	// reads the PEM.
	FormatPEM Format = "pem"
	// FormatDER is the standard base64 of the certificate's DER, as
	// HAProxy's ssl_c_der,base64.
	FormatDER Format = "der"
)

// ParseFormat reads "pem" or "der".
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(s)); f {
	case FormatPEM, FormatDER:
		return f, nil
	}
	return "", fmt.Errorf("forward format %q: want pem or der", s)
}

// Encode writes cert, the leaf alone, as one header value.
func (f Format) Encode(cert *x509.Certificate) string {
	if f == FormatDER {
		return base64.StdEncoding.EncodeToString(cert.Raw)
	}
	return url.QueryEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})))
}

// StripHeader removes every value of the header name from h, whatever the
// letter case of the key it is stored under, and every header whose name
// differs from it only by '_' for '-', which some servers take as the same.
func StripHeader(h http.Header, name string) {
	want := strings.ReplaceAll(name, "_", "-")
	for key := range h {
		if strings.EqualFold(strings.ReplaceAll(key, "_", "-"), want) {
			delete(h, key)
		}
	}
}
