package mtlsident

import (
	"bytes"
	"crypto/x509/pkix"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nutsgate/nutsgate/internal/testnode"
)

// FuzzNormalizeDN: no input panics, and for ASCII input letter case never
// changes the key.
func FuzzNormalizeDN(f *testing.F) {
	for _, s := range []string{"CN=node-a,O=Nuts,C=NL", `CN=a\,b+OU=x`, "E=#160161", `CN="q"`, `CN=\ x\ `, "oid.2.5.4.3=y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		key, err := normalizeDN(s)
		if err != nil || !isASCII(s) {
			return
		}
		upper, err := normalizeDN(strings.ToUpper(s))
		if err != nil || upper != key {
			t.Fatalf("%q gives %q but its upper case %q, %v", s, key, upper, err)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// FuzzSubjectRoundTrip: for any subject, the DN the identity renders is a
// deny entry that denies that very certificate, and one that differs in one
// value does not.
func FuzzSubjectRoundTrip(f *testing.F) {
	f.Add("node-a", "Nuts, B.V.", "#ops+dev")
	f.Add(" lead", "trail ", `back\slash"quote`)
	f.Fuzz(func(t *testing.T, cn, o, ou string) {
		if !utf8.ValidString(cn) || !utf8.ValidString(o) || !utf8.ValidString(ou) || cn == "" || o == "" || ou == "" || strings.ContainsRune(cn+o+ou, 0) {
			return
		}
		id, err := FromCertificate(certWith(t, pkix.RDNSequence{{atv(oidO, o)}, {atv(oidOU, ou), atv(oidCommonName, cn)}}))
		if err != nil {
			return // a value Go cannot encode or a DN too long
		}
		e, err := ParseEntry(id.Subject)
		if err != nil {
			t.Fatalf("rendered subject %q does not parse: %v", id.Subject, err)
		}
		if _, ok := NewDenyList([]Entry{e}).Denies(id); !ok {
			t.Fatalf("entry %q does not deny its own certificate", id.Subject)
		}
		otherID, err := FromCertificate(certWith(t, pkix.RDNSequence{{atv(oidO, o+"x")}, {atv(oidOU, ou), atv(oidCommonName, cn)}}))
		if err == nil {
			if _, ok := NewDenyList([]Entry{e}).Denies(otherID); ok {
				t.Fatalf("entry %q denies %q too", id.Subject, otherID.Subject)
			}
		}
	})
}

// BenchmarkIdentity is the per-request cost of identifying a client.
func BenchmarkIdentity(b *testing.B) {
	cert := certWith(b, pkix.RDNSequence{{atv(oidC, "NL")}, {atv(oidO, "Nuts")}, {atv(oidCommonName, "node-a.example.org")}})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := FromCertificate(cert); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIdentify is the same for a certificate seen before.
func BenchmarkIdentify(b *testing.B) {
	cert := certWith(b, pkix.RDNSequence{{atv(oidC, "NL")}, {atv(oidO, "Nuts")}, {atv(oidCommonName, "node-a.example.org")}})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Identify(cert); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzForwardHeader: whatever the subject, the value the gateway forwards
// in either format is read by the node (testnode.ParseCertHeader parses it
// the node's way) as exactly the client's certificate.
func FuzzForwardHeader(f *testing.F) {
	f.Add("node-a", "Nuts+Co/=%")
	f.Add("a\nb", "ü")
	f.Fuzz(func(t *testing.T, cn, o string) {
		if !utf8.ValidString(cn) || !utf8.ValidString(o) {
			return
		}
		cert := certWith(t, pkix.RDNSequence{{atv(oidO, o)}, {atv(oidCommonName, cn)}})
		for _, format := range []Format{FormatPEM, FormatDER} {
			value := format.Encode(cert)
			if strings.ContainsAny(value, "\r\n") {
				t.Fatalf("%s value holds a line break: %q", format, value)
			}
			got, err := testnode.ParseCertHeader([]string{value})
			if err != nil || !bytes.Equal(got.Raw, cert.Raw) {
				t.Fatalf("%s value not read back by the node's parser: %v", format, err)
			}
		}
	})
}
