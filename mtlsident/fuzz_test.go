package mtlsident

import (
	"bytes"
	"crypto/x509/pkix"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/nutsgate/nutsgate/internal/testnode"
)

// FuzzNormalizeDN: no input panics, and for ASCII input letter case never
// changes the key (but for the one name case tells apart, uid). An entry
// that parses is kept as one line without control characters, which parses
// to the same entry; raw control characters read as their escapes.
func FuzzNormalizeDN(f *testing.F) {
	for _, s := range []string{"CN=node-a,O=Nuts,C=NL", `CN=a\,b+OU=x`, "E=#160161", `CN="q"`, `CN=\ x\ `, "oid.2.5.4.3=y",
		"GN=Jan,pseudonym=p", "C = NL, O = Org, CN = x", "subject=CN=x", "CN=a\nb", "CN=a\\\nb", "CN=#1e00610062", "CN=#1c0000006100000062", "uid=x,UID=y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if e, err := ParseEntry(s); err == nil {
			if strings.ContainsFunc(e.Text, unicode.IsControl) {
				t.Fatalf("%q kept as %q, with a control character", s, e.Text)
			}
			again, err := ParseEntry(e.Text)
			if err != nil || again.Text != e.Text || again.key != e.key {
				t.Fatalf("%q kept as %q, which reads as %q, %v", s, e.Text, again.Text, err)
			}
			if raw, err := normalizeDN(trimEntry(s)); err == nil && !strings.HasPrefix(e.key, fingerprintPrefix) && raw != e.key {
				t.Fatalf("%q reads as %q raw, but its entry %q as %q", s, raw, e.Text, e.key)
			}
		}
		key, err := normalizeDN(s)
		if err != nil || !isASCII(s) || strings.Contains(strings.ToUpper(s), "UID") {
			return
		}
		upper, err := normalizeDN(strings.ToUpper(s))
		if err != nil || upper != key {
			t.Fatalf("%q gives %q but its upper case %q, %v", s, key, upper, err)
		}
	})
}

// FuzzDenyFile: whatever a deny file holds, writing its list and skipped
// lines back gives a file that reads as the same entries, in order, and
// the same skipped lines; every entry is one line.
func FuzzDenyFile(f *testing.F) {
	f.Add([]byte("# c\nCN=a,O=b\n\nnot a dn\r\nsha256:" + strings.Repeat("ab", 32) + "\n  GN=x  \nC = NL, CN = y\n"))
	f.Add([]byte("CN=a\x00b\nCN=a\\\x7f\n\xff\n#\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		list, skipped := ParseDenyFile(data)
		out := FormatDenyFile(list, skipped)
		back, skippedBack := ParseDenyFile(out)
		if a, b := list.Entries(), back.Entries(); !slices.EqualFunc(a, b, func(x, y Entry) bool { return x.key == y.key && x.Text == y.Text }) {
			t.Fatalf("entries %q written and read back as %q:\n%q", entryTexts(list), entryTexts(back), out)
		}
		if !slices.EqualFunc(skipped, skippedBack, func(x, y SkippedLine) bool { return x.Text == y.Text }) {
			t.Fatalf("skipped %v written and read back as %v:\n%q", skipped, skippedBack, out)
		}
		if lines := bytes.Count(out, []byte("\n")); lines != 2+len(list.Entries())+len(skipped)+min(len(skipped), 1) {
			t.Fatalf("%d entries and %d skipped lines written as %d lines", len(list.Entries()), len(skipped), lines)
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
	f.Add("a\nO=b", "x\x00y", "\\\r\x7f\u0085")
	f.Fuzz(func(t *testing.T, cn, o, ou string) {
		if !utf8.ValidString(cn) || !utf8.ValidString(o) || !utf8.ValidString(ou) || cn == "" || o == "" || ou == "" {
			return
		}
		id, err := FromCertificate(certWith(t, pkix.RDNSequence{{atv(oidO, o)}, {atv(oidOU, ou), atv(oidCommonName, cn)}}))
		if err != nil {
			return // a value Go cannot encode or a DN too long
		}
		if strings.ContainsFunc(id.Subject, unicode.IsControl) {
			t.Fatalf("subject %q holds a control character", id.Subject)
		}
		e, err := ParseEntry(id.Subject)
		if err != nil {
			t.Fatalf("rendered subject %q does not parse: %v", id.Subject, err)
		}
		if _, ok := NewDenyList([]Entry{e}).Denies(id); !ok {
			t.Fatalf("entry %q does not deny its own certificate", id.Subject)
		}
		// so does the entry written to a deny file and read back
		fromFile, skipped := ParseDenyFile(FormatDenyFile(NewDenyList([]Entry{e}), nil))
		if _, ok := fromFile.Denies(id); !ok || len(skipped) > 0 {
			t.Fatalf("entry %q read back from a file: %q, skipped %v", id.Subject, entryTexts(fromFile), skipped)
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
