package pki

import (
	"encoding/pem"
	"net/http/httptest"
	"testing"
	"time"
)

// FuzzParseCRL feeds ParseCRL, and a source's acceptance rules, bytes as a
// CRL server might send them: it must never panic, and a CRL it accepts
// must be one whose revoked serials are all indexed.
func FuzzParseCRL(f *testing.F) {
	ca := newRoot(f, &crlServer{Server: &httptest.Server{URL: "http://127.0.0.1:1"}}, "fuzz")
	leaf := ca.issue(f, "leaf", time.Now().Add(time.Hour))
	der := ca.crl(f, 7, leaf)
	f.Add(der)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	f.Add([]byte("-----BEGIN X509 CRL-----\n"))
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := ParseCRL(data)
		if err != nil {
			return
		}
		s := &crlSource{}
		s.addIssuer(ca.cert)
		held, err := verifyCRL(list, s.issuers, time.Now())
		if err != nil {
			return
		}
		for _, e := range list.RevokedCertificateEntries {
			if e.SerialNumber != nil {
				if _, ok := held.revoked[serialKey(e.SerialNumber)]; !ok {
					t.Fatalf("serial %s not indexed", e.SerialNumber)
				}
			}
		}
	})
}
