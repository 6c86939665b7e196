package mtlsident

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"unicode/utf16"
)

// openssl prints cert's subject as `openssl x509 -noout -subject -nameopt
// <nameopt>` does ("" for the default form), without the "subject=".
func openssl(t *testing.T, cert *x509.Certificate, nameopt string) string {
	t.Helper()
	return opensslDER(t, cert.Raw, nameopt)
}

// opensslDER is openssl for a certificate Go may not parse.
func opensslDER(t *testing.T, der []byte, nameopt string) string {
	t.Helper()
	args := []string{"x509", "-noout", "-subject"}
	if nameopt != "" {
		args = append(args, "-nameopt", nameopt)
	}
	cmd := exec.Command("openssl", args...)
	cmd.Stdin = bytes.NewReader(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %s: %v: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return strings.TrimPrefix(strings.TrimSuffix(string(out), "\n"), "subject=")
}

// expectDenies asserts that entry, as openssl printed it, parses and denies
// the identity of cert and not that of other.
func expectDenies(t *testing.T, entry string, cert, other *x509.Certificate) {
	t.Helper()
	e, err := ParseEntry(entry)
	if err != nil {
		t.Errorf("openssl's %q refused: %v", entry, err)
		return
	}
	id, err := FromCertificate(cert)
	if err != nil {
		t.Fatalf("identity of %q: %v", entry, err)
	}
	list := NewDenyList([]Entry{e})
	if _, ok := list.Denies(id); !ok {
		t.Errorf("openssl's %q does not deny its certificate (identity %q)", entry, id.Subject)
	}
	otherID, err := FromCertificate(other)
	if err != nil {
		t.Fatalf("identity of the other certificate: %v", err)
	}
	if _, ok := list.Denies(otherID); ok {
		t.Errorf("openssl's %q denies %q too", entry, otherID.Subject)
	}
}

// TestOpenSSLAttributeTypes: a certificate whose subject holds every
// attribute type of the table, each in an RDN of its own, is printed by the
// real openssl by short name (-nameopt RFC2253), long name (RFC2253,lname)
// and OID (RFC2253,oid), each type spelt as the table says; each printed
// form is an entry that denies exactly that certificate, and none of the
// certificates that differ from it in the value of one attribute.
func TestOpenSSLAttributeTypes(t *testing.T) {
	value := func(i int) string { return fmt.Sprintf("Value %d", i) }
	subject := func(changed int) pkix.RDNSequence {
		var rdns pkix.RDNSequence
		for i, at := range attributeTypes {
			v := value(i)
			if i == changed {
				v += "x"
			}
			rdns = append(rdns, pkix.RelativeDistinguishedNameSET{atv(parseOID(t, at.OID), v)})
		}
		return rdns
	}
	cert := certWith(t, subject(-1))
	id, err := FromCertificate(cert)
	if err != nil {
		t.Fatal(err)
	}
	others := make([]Identity, len(attributeTypes))
	for i := range attributeTypes {
		if others[i], err = FromCertificate(certWith(t, subject(i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, form := range []struct {
		nameopt string
		name    func(attributeType) string
	}{
		{"RFC2253", func(at attributeType) string { return at.Short }},
		{"RFC2253,lname", func(at attributeType) string { return at.Long }},
		{"RFC2253,oid", func(at attributeType) string { return at.OID }},
	} {
		printed := openssl(t, cert, form.nameopt)
		rdns := strings.Split(printed, ",") // no value holds a comma
		if len(rdns) != len(attributeTypes) {
			t.Fatalf("openssl -nameopt %s prints %d RDNs, want %d: %q", form.nameopt, len(rdns), len(attributeTypes), printed)
		}
		for i, at := range attributeTypes {
			if got, want := rdns[len(rdns)-1-i], form.name(at)+"="+value(i); got != want {
				t.Errorf("%s: openssl -nameopt %s prints %q, the table says %q", at.OID, form.nameopt, got, want)
			}
		}
		e, err := ParseEntry(printed)
		if err != nil {
			t.Errorf("openssl -nameopt %s output refused: %v", form.nameopt, err)
			continue
		}
		list := NewDenyList([]Entry{e})
		if _, ok := list.Denies(id); !ok {
			t.Errorf("openssl -nameopt %s output does not deny its certificate:\n%s\nidentity:\n%s", form.nameopt, printed, id.Subject)
		}
		for i, other := range others {
			if _, ok := list.Denies(other); ok {
				t.Errorf("openssl -nameopt %s output denies the certificate whose %s differs", form.nameopt, attributeTypes[i].Short)
			}
		}
	}
}

func parseOID(t *testing.T, s string) asn1.ObjectIdentifier {
	t.Helper()
	var oid asn1.ObjectIdentifier
	for _, part := range strings.Split(s, ".") {
		n := 0
		for _, c := range part {
			n = n*10 + int(c-'0')
		}
		oid = append(oid, n)
	}
	return oid
}

// rawString is an ASN.1 string value of the given universal tag.
func rawString(tag int, s string) asn1.RawValue {
	var b []byte
	switch tag {
	case asn1.TagBMPString:
		for _, u := range utf16.Encode([]rune(s)) {
			b = binary.BigEndian.AppendUint16(b, u)
		}
	case 28: // UniversalString
		for _, r := range s {
			b = binary.BigEndian.AppendUint32(b, uint32(r))
		}
	case asn1.TagT61String: // Latin-1
		for _, r := range s {
			b = append(b, byte(r))
		}
	default:
		b = []byte(s)
	}
	return asn1.RawValue{Class: asn1.ClassUniversal, Tag: tag, Bytes: b}
}

// TestOpenSSLStringTypes: an attribute of a type no table names (openssl
// prints it as OID=#hex) and a CN, each held in every ASN.1 string type Go
// reads in a certificate, BMPString included: what openssl prints denies that
// certificate and not one with another value. UniversalString, which Go
// refuses in a certificate (so no such client connects), reads as the same
// DN as the value in a UTF8String. (VisibleString neither Go nor OpenSSL
// reads in a name.)
func TestOpenSSLStringTypes(t *testing.T) {
	unknown := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}
	types := []struct {
		name   string
		tag    int
		v      string
		goRead bool // Go's x509 parses a certificate with it
	}{
		{"UTF8String", asn1.TagUTF8String, "Nöde a", true},
		{"PrintableString", asn1.TagPrintableString, "Node a", true},
		{"IA5String", asn1.TagIA5String, "node@a", true},
		{"T61String", asn1.TagT61String, "Caf\u00e9", true},
		{"BMPString", asn1.TagBMPString, "Nöde \u4e2d a", true},
		{"UniversalString", tagUniversalString, "Nöde \U0001F600 a", false},
	}
	for _, typ := range types {
		for _, oid := range []asn1.ObjectIdentifier{unknown, oidCommonName} {
			name := func(tag int, v string) pkix.RDNSequence {
				rdns := pkix.RDNSequence{{atv(oidO, "Org")}, {{Type: oid, Value: rawString(tag, v)}}}
				if !oid.Equal(oidCommonName) {
					rdns = append(rdns, pkix.RelativeDistinguishedNameSET{atv(oidCommonName, "node")})
				}
				return rdns
			}
			for _, nameopt := range []string{"RFC2253", "RFC2253,oid"} {
				if typ.goRead {
					cert, other := certWith(t, name(typ.tag, typ.v)), certWith(t, name(typ.tag, typ.v+"x"))
					expectDenies(t, openssl(t, cert, nameopt), cert, other)
					continue
				}
				entry := opensslDER(t, certDER(t, name(typ.tag, typ.v)), nameopt)
				asUTF8 := opensslDER(t, certDER(t, name(asn1.TagUTF8String, typ.v)), nameopt)
				otherValue := opensslDER(t, certDER(t, name(typ.tag, typ.v+"x")), nameopt)
				key, err := normalizeDN(entry)
				want, _ := normalizeDN(asUTF8)
				other, _ := normalizeDN(otherValue)
				if err != nil || key != want || key == other {
					t.Errorf("%s %s: openssl's %q reads as %q, %v; want %q (as %q), not %q", oid, typ.name, entry, key, err, want, asUTF8, other)
				}
			}
		}
	}
}

// TestOpenSSLDefaultForm: OpenSSL 3's default -subject form (C first, " = ")
// is refused with an error that gives the RFC 2253 spelling; a single
// attribute so written is not ambiguous and denies; "subject=" as openssl
// prints it is dropped.
func TestOpenSSLDefaultForm(t *testing.T) {
	cert := certWith(t, pkix.RDNSequence{{atv(oidC, "NL")}, {atv(oidO, "Org, Inc.")}, {atv(oidOU, "a"), atv(oidE, "x@y")}, {atv(oidCommonName, "x")}})
	other := certWith(t, pkix.RDNSequence{{atv(oidC, "NL")}, {atv(oidO, "Org, Inc.")}, {atv(oidOU, "a"), atv(oidE, "x@y")}, {atv(oidCommonName, "y")}})
	def := openssl(t, cert, "")
	_, err := ParseEntry(def)
	want := openssl(t, cert, "RFC2253")
	if err == nil || !strings.Contains(err.Error(), "default") || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Errorf("openssl's default form %q: %v; want a one-line error naming the RFC 2253 spelling %q", def, err, want)
	}
	expectDenies(t, want, cert, other)
	expectDenies(t, "subject="+want, cert, other)

	one := certWith(t, pkix.RDNSequence{{atv(oidCommonName, "x")}})
	oneOther := certWith(t, pkix.RDNSequence{{atv(oidCommonName, "y")}})
	if def := openssl(t, one, ""); def != "CN = x" {
		t.Fatalf("openssl prints %q", def)
	}
	expectDenies(t, "CN = x", one, oneOther)
	expectDenies(t, "subject=CN = x", one, oneOther)

	// the old slash form is refused clearly too
	if _, err := ParseEntry("/C=NL/O=Org/CN=x"); err == nil || !strings.Contains(err.Error(), "RFC2253") {
		t.Errorf("slash form: %v", err)
	}
}

// TestUnknownAttributeName: a name no table holds is refused with an error
// that says how to write the type by OID.
func TestUnknownAttributeName(t *testing.T) {
	_, err := ParseEntry("CN=x,fooBar=y")
	if err == nil || !strings.Contains(err.Error(), `"fooBar"`) || !strings.Contains(err.Error(), "-nameopt RFC2253,oid") {
		t.Errorf("unknown name: %v", err)
	}
	// every name of the table reads as its type, in the case OpenSSL
	// prints it; only UID is ambiguous in other letter case
	for _, at := range attributeTypes {
		for _, n := range []string{at.Short, at.Long} {
			if oid, err := lookupAttribute(n); oid != at.OID || err != nil {
				t.Errorf("%s reads as %q, %v; want %s", n, oid, err, at.OID)
			}
		}
	}
	for _, n := range []string{"Uid", "uID"} {
		if oid, err := lookupAttribute(n); err == nil || !strings.Contains(err.Error(), "ambiguous") {
			t.Errorf("%s reads as %q, %v; want an error", n, oid, err)
		}
	}
	for n, want := range map[string]string{"commonname": "2.5.4.3", "EMAILADDRESS": "1.2.840.113549.1.9.1", "e": "1.2.840.113549.1.9.1", "gn": "2.5.4.42", "userid": "0.9.2342.19200300.100.1.1"} {
		if oid, err := lookupAttribute(n); oid != want || err != nil {
			t.Errorf("%s reads as %q, %v; want %s", n, oid, err, want)
		}
	}
}
