package tokenv2

import (
	//lint:ignore SA1019 a DSA key is generated on purpose, to prove that a DSA line is skipped with a warning
	"crypto/dsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/ssh"
)

// line returns the authorized_keys form of an SSH public key, with user.
func line(pub ssh.PublicKey, user string) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))) + " " + user
}

func TestParseAuthorizedKeysForms(t *testing.T) {
	k := testKeys(t)
	ed, p256 := sshPublic(t, k["ed25519"]), sshPublic(t, k["p256"])
	file := strings.Join([]string{
		"# operators of node A",
		"",
		"   ",
		line(ed, "alice#the admin"),
		`from="10.0.0.1",no-pty ` + line(p256, "bob") + "\r",
		line(ed, "mallory"), // listed again: the first user name counts
	}, "\n")
	ks, warnings, err := ParseAuthorizedKeys([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if ks.Len() != 2 {
		t.Fatalf("got %d keys, want 2", ks.Len())
	}
	a, b := ks.Keys()[0], ks.Keys()[1]
	if a.User != "alice" || a.Line != 4 || b.User != "bob" || b.Line != 5 {
		t.Fatalf("keys: %+v %+v", a, b)
	}
	if len(warnings) != 1 || warnings[0].Line != 6 || !strings.Contains(warnings[0].Reason, "line 4") {
		t.Fatalf("warnings: %v, want the duplicate on line 6", warnings)
	}
	for _, kid := range []string{a.SSHFingerprint, a.Thumbprint} {
		if got, ok := ks.Lookup(kid); !ok || got != a {
			t.Fatalf("kid %s does not find alice's key", kid)
		}
	}
	if _, ok := ks.Lookup("alice"); ok {
		t.Fatal("a user name works as kid")
	}
	// the duplicate's user name is not a valid issuer
	v := NewVerifier(Policy{Audience: testAudience}, -1, func() time.Time { return testNow })
	v.SetKeys(ks)
	kk := *k["ed25519"]
	kk.user = "mallory"
	check(t, v, "Bearer "+validToken(t, &kk), ReasonIssuer)
	kk.user = "alice"
	check(t, v, "Bearer "+validToken(t, &kk), "")
}

func TestParseAuthorizedKeysSkipped(t *testing.T) {
	dsaKey := new(dsa.PrivateKey)
	if err := dsa.GenerateParameters(&dsaKey.Parameters, rand.Reader, dsa.L1024N160); err != nil {
		t.Fatal(err)
	}
	if err := dsa.GenerateKey(dsaKey, rand.Reader); err != nil {
		t.Fatal(err)
	}
	dsaPub, err := ssh.NewPublicKey(&dsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	smallPub, _ := ssh.NewPublicKey(&small.PublicKey)
	caSigner, err := ssh.NewSignerFromKey(testKeys(t)["p256"].signer)
	if err != nil {
		t.Fatal(err)
	}
	cert := &ssh.Certificate{Key: sshPublic(t, testKeys(t)["ed25519"]), CertType: ssh.UserCert, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, caSigner); err != nil {
		t.Fatal(err)
	}
	skPub, _, _ := ed25519.GenerateKey(rand.Reader)
	sk := "sk-ssh-ed25519@openssh.com " + base64.StdEncoding.EncodeToString(ssh.Marshal(struct {
		Name, Key, App string
	}{"sk-ssh-ed25519@openssh.com", string(skPub), "ssh:"}))

	file := strings.Join([]string{
		line(dsaPub, "dsa-user"),
		line(smallPub, "rsa1024"),
		line(cert, "cert-user"),
		sk + " sk-user",
		line(sshPublic(t, testKeys(t)["rsa"]), ""),
		line(sshPublic(t, testKeys(t)["p384"]), "# no name, only a comment"),
		line(sshPublic(t, testKeys(t)["p521"]), "carol"),
	}, "\n")
	ks, warnings, err := ParseAuthorizedKeys([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if ks.Len() != 1 || ks.Keys()[0].User != "carol" {
		t.Fatalf("usable keys: %d, want only carol's", ks.Len())
	}
	wantReasons := []string{"ssh-dss", "1024 bits", "cert", "sk-ssh-ed25519", "no user name", "no user name"}
	if len(warnings) != len(wantReasons) {
		t.Fatalf("warnings: %v", warnings)
	}
	for i, w := range warnings {
		if w.Line != i+1 || !strings.Contains(w.Reason, wantReasons[i]) {
			t.Errorf("warning %d: %v, want line %d about %q", i, w, i+1, wantReasons[i])
		}
	}
}

func TestParseAuthorizedKeysInvalid(t *testing.T) {
	good := line(sshPublic(t, testKeys(t)["ed25519"]), "alice")
	for _, tc := range []struct {
		name, file string
		line       int
	}{
		{"garbage", good + "\nnot a key at all", 2},
		{"bad base64", "# header\n\nssh-ed25519 !!!notbase64 user", 3},
		{"truncated key", good[:40] + " alice", 1},
		{"unknown type", "ssh-foo AAAAB3NzaC1yc2EAAAADAQABAAABAQ user", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseAuthorizedKeys([]byte(tc.file))
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line != tc.line {
				t.Fatalf("error %v, want a ParseError on line %d", err, tc.line)
			}
		})
	}
}

func TestParseAuthorizedKeysEmpty(t *testing.T) {
	ks, warnings, err := ParseAuthorizedKeys([]byte("# nobody yet\n\n"))
	if err != nil || len(warnings) != 0 || ks.Len() != 0 {
		t.Fatalf("%v %v %d", err, warnings, ks.Len())
	}
}

// RFC 7638 section 3.1 and RFC 8037 appendix A.3 give thumbprints to check.
func TestThumbprintVectors(t *testing.T) {
	n, _ := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	rsaPub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}
	x, _ := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	for _, tc := range []struct {
		name string
		key  any
		want string
	}{
		{"RFC 7638 RSA", rsaPub, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"},
		{"RFC 8037 Ed25519", ed25519.PublicKey(x), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"},
	} {
		got, err := Thumbprint(tc.key)
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestKeyFileReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "authorized_keys")
	k := testKeys(t)
	alice, bob := *k["ed25519"], *k["p256"]
	alice.user, bob.user = "alice", "bob"
	write := func(lines ...string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	replace := func(lines ...string) {
		t.Helper()
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(authorizedKeyLine(t, &alice))
	core, logs := observer.New(zap.InfoLevel)
	v := NewVerifier(Policy{Audience: testAudience}, 0, func() time.Time { return testNow })
	kf, err := LoadKeyFile(path, v, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	aliceTok, bobTok := "Bearer "+validToken(t, &alice), "Bearer "+validToken(t, &bob)
	check(t, v, aliceTok, "")
	check(t, v, aliceTok, "") // cached now
	check(t, v, bobTok, ReasonUnknownKey)

	// replaced by rename: alice removed, bob added
	replace(authorizedKeyLine(t, &bob))
	kf.Check()
	check(t, v, aliceTok, ReasonUnknownKey)
	check(t, v, bobTok, "")

	// rewritten in place
	write(authorizedKeyLine(t, &alice), authorizedKeyLine(t, &bob))
	kf.Check()
	check(t, v, aliceTok, "")

	// a broken version keeps the keys in force and is logged with file and line
	write(authorizedKeyLine(t, &alice), "ssh-ed25519 !!!notbase64 mallory")
	kf.Check()
	kf.Check()
	check(t, v, bobTok, "")
	bad := logs.FilterMessageSnippet("invalid").All()
	if len(bad) != 1 || !strings.Contains(bad[0].ContextMap()["error"].(string), path+":2:") {
		t.Fatalf("log of the broken file: %+v", bad)
	}

	// a removed file keeps the keys in force too
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	kf.Check()
	check(t, v, bobTok, "")
	if logs.FilterMessageSnippet("unreadable").Len() != 1 {
		t.Fatal("a missing file is not logged")
	}

	// an empty file starts, with a warning, and refuses everyone
	write("")
	kf.Check()
	check(t, v, bobTok, ReasonUnknownKey)
	if logs.FilterMessageSnippet("no usable key").Len() != 1 {
		t.Fatal("an empty key set is not warned about")
	}
}

func TestLoadKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	v := NewVerifier(Policy{Audience: testAudience}, 0, nil)
	if _, err := LoadKeyFile(filepath.Join(dir, "missing"), v, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing file: %v", err)
	}
	path := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(path, []byte("\n\nnonsense here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadKeyFile(path, v, zap.NewNop())
	if err == nil || !strings.HasPrefix(err.Error(), path+":3: ") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("bad file: %v, want one line starting %s:3:", err, path)
	}
}
