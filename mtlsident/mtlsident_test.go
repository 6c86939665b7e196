package mtlsident

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	oidO  = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidOU = asn1.ObjectIdentifier{2, 5, 4, 11}
	oidC  = asn1.ObjectIdentifier{2, 5, 4, 6}
	oidE  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
)

// certWith returns a self-signed certificate whose subject is rdns, exactly.
func certWith(t testing.TB, rdns pkix.RDNSequence) *x509.Certificate {
	t.Helper()
	cert, err := x509.ParseCertificate(certDER(t, rdns))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// certDER is certWith's certificate, unparsed.
func certDER(t testing.TB, rdns pkix.RDNSequence) []byte {
	t.Helper()
	raw, err := asn1.Marshal(rdns)
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		RawSubject:   raw,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func atv(oid asn1.ObjectIdentifier, v string) pkix.AttributeTypeAndValue {
	return pkix.AttributeTypeAndValue{Type: oid, Value: v}
}

func TestFromCertificate(t *testing.T) {
	cert := certWith(t, pkix.RDNSequence{
		{atv(oidC, "NL")},
		{atv(oidO, "Nuts, B.V.")},
		{atv(oidOU, "nodes"), atv(oidE, "ops@example.org")},
		{atv(oidCommonName, "node-a.example.org")},
	})
	id, err := FromCertificate(cert)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.Raw)
	want := Identity{
		Subject:     `CN=node-a.example.org,OU=nodes+1.2.840.113549.1.9.1=#0c0f6f7073406578616d706c652e6f7267,O=Nuts\, B.V.,C=NL`,
		CN:          "node-a.example.org",
		Fingerprint: hex.EncodeToString(sum[:]),
		Issuer:      `CN=node-a.example.org,OU=nodes+1.2.840.113549.1.9.1=#0c0f6f7073406578616d706c652e6f7267,O=Nuts\, B.V.,C=NL`,
		NotAfter:    cert.NotAfter,
	}
	want.subjectKey, want.fingerprintKey = id.subjectKey, "sha256:"+want.Fingerprint
	want.pemValue, want.derValue = FormatPEM.Encode(cert), FormatDER.Encode(cert)
	if id.Forward(FormatPEM) != want.pemValue || id.Forward(FormatDER) != want.derValue {
		t.Fatal("Forward does not give the certificate's header values")
	}
	if !reflect.DeepEqual(id, want) {
		t.Fatalf("identity\n%+v\nwant\n%+v", id, want)
	}
}

// Go's x509.Certificate.Subject keeps only the last CN; the identity must
// not pick one: such a certificate is refused.
func TestFromCertificateTwoCNs(t *testing.T) {
	for _, rdns := range []pkix.RDNSequence{
		{{atv(oidCommonName, "attacker")}, {atv(oidCommonName, "victim")}},
		{{atv(oidCommonName, "attacker"), atv(oidCommonName, "victim")}},
	} {
		if id, err := FromCertificate(certWith(t, rdns)); err != ErrAmbiguous {
			t.Fatalf("two CNs: %+v, %v; want ErrAmbiguous", id, err)
		}
	}
}

func TestNormalizeDN(t *testing.T) {
	same := [][]string{
		{"CN=node-a,O=Nuts,C=NL", "cn=NODE-A,o=nuts,c=nl", " CN = node-a , O = Nuts ; C = NL ", "2.5.4.3=node-a,OID.2.5.4.10=Nuts,C=NL", `CN="node-a",O=Nuts,C=NL`},
		{`CN=a\,b,O=x`, `CN=a\2cb,O=x`, `CN = a\2C b ,O=x`[:0] + `CN=a\2Cb,O=x`},
		{"OU=a+CN=b,O=x", "CN=b+OU=a,O=x"},
		{"E=ops@example.org", "emailAddress=OPS@example.org", "1.2.840.113549.1.9.1=#160f6f7073406578616d706c652e6f7267"},
		{`CN=\ padded\ `, `CN=\20padded\20`},
		{"CN=caf\\c3\\a9", "CN=CAFÉ"},
		{"CN=a=b", `CN=a\=b`},
	}
	for _, group := range same {
		first, err := normalizeDN(group[0])
		if err != nil {
			t.Fatalf("%q: %v", group[0], err)
		}
		for _, s := range group[1:] {
			if got, err := normalizeDN(s); err != nil || got != first {
				t.Errorf("%q: %q, %v; want the key of %q: %q", s, got, err, group[0], first)
			}
		}
	}
	different := [][2]string{
		{"CN=a,O=x", "O=x,CN=a"},       // order as written
		{"CN=a,O=x", "CN=a,O=x,C=NL"},  // extra RDN
		{"CN=a+O=x", "CN=a,O=x"},       // multi-valued is not two RDNs
		{"CN=a b", "CN=ab"},            // white space inside a value counts
		{`CN=a\,O=x`, "CN=a,O=x"},      // escaped separator
		{"CN=#0c0161", "CN=#0c0162"},   // hex values
		{"CN=node-a", "CN=node-a.org"}, // no prefix matching
	}
	for _, pair := range different {
		a, errA := normalizeDN(pair[0])
		b, errB := normalizeDN(pair[1])
		if errA != nil || errB != nil || a == b {
			t.Errorf("%q and %q: %q %v / %q %v; want different keys", pair[0], pair[1], a, errA, b, errB)
		}
	}
	for _, bad := range []string{"", "CN", "=x", "CN=a,", "foo=bar", `CN=a\`, `CN="open`, `CN="a"b`, "CN=#zz", "CN=\xff", `CN=\ff`, strings.Repeat("CN=a,", 2000)} {
		if key, err := normalizeDN(bad); err == nil {
			t.Errorf("%q: accepted as %q", bad, key)
		}
	}
}

func TestDenyList(t *testing.T) {
	node := certWith(t, pkix.RDNSequence{{atv(oidC, "NL")}, {atv(oidO, "Nuts")}, {atv(oidCommonName, "node-a")}})
	other := certWith(t, pkix.RDNSequence{{atv(oidC, "NL")}, {atv(oidO, "Nuts")}, {atv(oidCommonName, "node-b")}})
	id, _ := FromCertificate(node)
	otherID, _ := FromCertificate(other)
	sum := sha256.Sum256(node.Raw)
	colons := strings.ToUpper(hex.EncodeToString(sum[:1]))
	for _, b := range sum[1:] {
		colons += ":" + strings.ToUpper(hex.EncodeToString([]byte{b}))
	}
	for _, text := range []string{
		"CN=node-a,O=Nuts,C=NL",
		"cn=NODE-A, o=nuts, c=nl",
		"cn = NODE-A, o=nuts , c=nl",
		"subject=CN=node-a,O=Nuts,C=NL",
		"sha256:" + hex.EncodeToString(sum[:]),
		"SHA256:" + colons,
	} {
		e, err := ParseEntry(text)
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		d := NewDenyList([]Entry{e})
		if got, ok := d.Denies(id); !ok || got.Text != strings.TrimPrefix(text, "subject=") {
			t.Errorf("%q does not deny %s", text, id.Subject)
		}
		if _, ok := d.Denies(otherID); ok {
			t.Errorf("%q denies %s too", text, otherID.Subject)
		}
	}
	for _, bad := range []string{"", "  ", "sha256:abc", "sha256:" + strings.Repeat("g", 64), "node-a", "subject=", "cn = NODE-A, o = nuts, c = nl", "/CN=node-a/O=Nuts/C=NL"} {
		if _, err := ParseEntry(bad); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want a one-line error", bad, err)
		}
	}
	// With and Without work by meaning
	a, _ := ParseEntry("CN=node-a,O=Nuts,C=NL")
	a2, _ := ParseEntry("cn=NODE-A,o=Nuts,c=NL")
	d, added := NewDenyList(nil).With(a)
	if !added {
		t.Fatal("not added")
	}
	if _, added := d.With(a2); added {
		t.Fatal("the same subject spelled differently was added twice")
	}
	if d, removed := d.Without(a2); !removed || len(d.Entries()) != 0 {
		t.Fatal("not removed by another spelling")
	}
}

func TestDenyFile(t *testing.T) {
	list, skipped := ParseDenyFile([]byte("# blocked nodes\n\nCN=node-a,O=Nuts\n  # indented comment\nsha256:" + strings.Repeat("ab", 32) + "\nCN=node-a, O=Nuts\n"))
	if len(skipped) != 0 {
		t.Fatal(skipped)
	}
	if n := len(list.Entries()); n != 2 {
		t.Fatalf("%d entries, want 2 (the third repeats the first)", n)
	}
	back, skipped := ParseDenyFile(FormatDenyFile(list, nil))
	if len(skipped) != 0 || len(back.Entries()) != 2 || back.Entries()[0].Text != "CN=node-a,O=Nuts" {
		t.Fatalf("round trip: %v %v", back.Entries(), skipped)
	}
}

// TestDenyFileSkipsBadLines: a line that does not parse is skipped, with
// its number, text and error, and the others are in force; writing the
// list back keeps the skipped lines as they were, after the entries.
func TestDenyFileSkipsBadLines(t *testing.T) {
	data := "CN=ok\n\nnot a dn\r\n  GN=Jan,CN=x  \nC = NL, O = Org, CN = y\nsha256:abc\n"
	list, skipped := ParseDenyFile([]byte(data))
	if got := entryTexts(list); strings.Join(got, "|") != "CN=ok|GN=Jan,CN=x" {
		t.Errorf("entries %q, want CN=ok and GN=Jan,CN=x", got)
	}
	want := []SkippedLine{{Line: 3, Text: "not a dn\r"}, {Line: 5, Text: "C = NL, O = Org, CN = y"}, {Line: 6, Text: "sha256:abc"}}
	if len(skipped) != len(want) {
		t.Fatalf("skipped %v, want lines 3, 5 and 6", skipped)
	}
	for i, l := range skipped {
		if l.Line != want[i].Line || l.Text != want[i].Text || l.Err == nil || !strings.HasPrefix(l.Error(), fmt.Sprintf("line %d: ", l.Line)) || strings.Contains(l.Error(), "\n") {
			t.Errorf("skipped line %d: %+v (%v), want %+v", i, l, l.Err, want[i])
		}
	}
	formatted := FormatDenyFile(list, skipped)
	back, skippedBack := ParseDenyFile(formatted)
	if got := entryTexts(back); strings.Join(got, "|") != "CN=ok|GN=Jan,CN=x" {
		t.Errorf("entries after a write %q", got)
	}
	if len(skippedBack) != len(want) {
		t.Fatalf("after a write skipped %v, want the same lines", skippedBack)
	}
	for i, l := range skippedBack {
		if l.Text != want[i].Text {
			t.Errorf("after a write skipped %q, want %q", l.Text, want[i].Text)
		}
	}
	if !strings.Contains(string(formatted), "\n# The lines below do not parse") {
		t.Errorf("written file does not say why the lines follow:\n%s", formatted)
	}
}

func entryTexts(d *DenyList) []string {
	var texts []string
	for _, e := range d.Entries() {
		texts = append(texts, e.Text)
	}
	return texts
}

// TestControlCharacters: a subject holding control characters is one line,
// escaped as openssl -nameopt RFC2253 escapes them; the entry that denies it,
// raw or escaped, is kept escaped, so the deny file holds it on one line and
// reading the file back denies that client and no other.
func TestControlCharacters(t *testing.T) {
	cert := certWith(t, pkix.RDNSequence{{atv(oidO, "Org")}, {atv(oidCommonName, "a\nb\tc\x7f")}})
	short := certWith(t, pkix.RDNSequence{{atv(oidCommonName, "a")}}) // what a line break would leave
	bOrg := certWith(t, pkix.RDNSequence{{atv(oidO, "Org")}, {atv(oidCommonName, "b")}})
	id, err := FromCertificate(cert)
	if err != nil {
		t.Fatal(err)
	}
	if want := `CN=a\0Ab\09c\7F,O=Org`; id.Subject != want {
		t.Errorf("subject %q, want %q", id.Subject, want)
	}
	if want := `a\0Ab\09c\7F`; id.CN != want {
		t.Errorf("CN %q, want %q", id.CN, want)
	}
	if got := openssl(t, cert, "RFC2253"); got != id.Subject {
		t.Errorf("openssl prints %q, the identity is %q", got, id.Subject)
	}
	for _, text := range []string{id.Subject, "CN=a\nb\tc\x7f,O=Org", "CN=a\\\nb\tc\x7f,O=Org"} {
		e, err := ParseEntry(text)
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if e.Text != id.Subject {
			t.Errorf("%q kept as %q, want %q", text, e.Text, id.Subject)
		}
		list, skipped := ParseDenyFile(FormatDenyFile(NewDenyList([]Entry{e}), nil))
		if len(list.Entries()) != 1 || len(skipped) != 0 {
			t.Fatalf("%q written and read back: %q, skipped %v", text, entryTexts(list), skipped)
		}
		for _, c := range []*x509.Certificate{cert, short, bOrg} {
			cid, _ := FromCertificate(c)
			if _, ok := list.Denies(cid); ok != (c == cert) {
				t.Errorf("%q read back from the file: denies %q: %v", text, cid.Subject, ok)
			}
		}
	}
}

func TestStripHeader(t *testing.T) {
	h := http.Header{"X-Ssl-Cert": {"a", "b"}, "x-ssl-cert": {"c"}, "X_SSL_CERT": {"d"}, "X-Ssl-Certificate": {"keep"}}
	StripHeader(h, "X-SSL-CERT")
	if len(h) != 1 || h.Get("X-Ssl-Certificate") != "keep" {
		t.Fatalf("left %v", h)
	}
}

func TestFormat(t *testing.T) {
	cert := certWith(t, pkix.RDNSequence{{atv(oidCommonName, "node-a")}})
	pemValue := FormatPEM.Encode(cert)
	unescaped, err := url.QueryUnescape(pemValue)
	if err != nil || unescaped != string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})) || strings.ContainsAny(pemValue, "\n /=") {
		t.Fatalf("PEM value is not the query-escaped PEM: %q", pemValue)
	}
	if der := FormatDER.Encode(cert); strings.ContainsAny(der, "\n%") {
		t.Fatalf("DER value %q", der[:20])
	}
	for _, s := range []string{"pem", "DER"} {
		if _, err := ParseFormat(s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ParseFormat("xfcc"); err == nil {
		t.Fatal("xfcc accepted")
	}
}

func TestIdentifyRemembers(t *testing.T) {
	cert := certWith(t, pkix.RDNSequence{{atv(oidCommonName, "node-a")}})
	first, err := Identify(cert)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := Identify(cert); !reflect.DeepEqual(again, first) {
		t.Fatalf("%+v != %+v", again, first)
	}
	two := certWith(t, pkix.RDNSequence{{atv(oidCommonName, "a")}, {atv(oidCommonName, "b")}})
	for range 2 {
		if _, err := Identify(two); err != ErrAmbiguous {
			t.Fatalf("two CNs: %v", err)
		}
	}
	for i := 0; i < cacheSize+10; i++ {
		sum := [32]byte{byte(i), byte(i >> 8), 1}
		identities.Lock()
		identities.m[sum] = cachedIdentity{}
		identities.Unlock()
	}
	if _, err := Identify(certWith(t, pkix.RDNSequence{{atv(oidCommonName, "late")}})); err != nil {
		t.Fatal(err)
	}
	if n := len(identities.m); n > cacheSize {
		t.Fatalf("cache holds %d, bound %d", n, cacheSize)
	}
}
