package testnode

import (
	"bytes"
	"net/url"
	"testing"
)

func TestParseCertHeader(t *testing.T) {
	for _, tc := range headerCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCertHeader(tc.values)
			switch {
			case tc.want == nil && err == nil:
				t.Fatalf("accepted, want refusal (subject %s)", got.Subject)
			case tc.want != nil && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != nil && !bytes.Equal(got.Raw, tc.want.Raw):
				t.Fatalf("got certificate %s, want %s", got.Subject, tc.want.Subject)
			}
		})
	}
}

// TestParseCertHeaderSkipsOtherPEMBlocks shows the node's PEM reading skips
// blocks that are not certificates.
func TestParseCertHeaderSkipsOtherPEMBlocks(t *testing.T) {
	cert := newCert(t, "node-a")
	value := url.QueryEscape("-----BEGIN JUNK-----\nAAAA\n-----END JUNK-----\n" + pemOf(cert))
	got, err := ParseCertHeader([]string{value})
	if err != nil || !bytes.Equal(got.Raw, cert.Raw) {
		t.Fatalf("got %v, %v; want the certificate", got, err)
	}
}

// FuzzParseCertHeader checks that no value panics and that whatever is
// accepted is one certificate that reads back the same from both encodings
// a gateway forwards.
func FuzzParseCertHeader(f *testing.F) {
	cert := newCert(f, "fuzz")
	for _, seed := range []string{escapedPEM(cert), base64DER(cert), pemOf(cert), "", "%%%", "-----BEGIN CERTIFICATE-----", "AAAA"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, value string) {
		got, err := ParseCertHeader([]string{value})
		if err != nil {
			return
		}
		for _, again := range []string{escapedPEM(got), base64DER(got)} {
			back, err := ParseCertHeader([]string{again})
			if err != nil || !bytes.Equal(back.Raw, got.Raw) {
				t.Fatalf("accepted %q but not its re-encoding: %v", value, err)
			}
		}
	})
}
