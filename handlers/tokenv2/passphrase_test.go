package tokenv2

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestParsePassphraseProtectedKey proves that a passphrase-protected
// OpenSSH key is read with its passphrase, as a private and as a public key,
// and that without it, or with a wrong one, the error says so (and is the
// same whether the caller wanted the private or the public key).
func TestParsePassphraseProtectedKey(t *testing.T) {
	for name, k := range testKeys(t) {
		block, err := ssh.MarshalPrivateKeyWithPassphrase(k.signer, "", []byte("correct horse"))
		if err != nil {
			t.Fatal(err)
		}
		data := pem.EncodeToMemory(block)

		signer, err := ParsePrivateKeyWithPassphrase(data, []byte("correct horse"))
		if err != nil {
			t.Fatalf("%s: with the passphrase: %v", name, err)
		}
		if !reflect.DeepEqual(signer.Public(), k.signer.Public()) {
			t.Errorf("%s: read a different key", name)
		}
		pub, err := ParsePublicKeyWithPassphrase(data, []byte("correct horse"))
		if err != nil || !reflect.DeepEqual(pub, k.signer.Public()) {
			t.Errorf("%s: public key with the passphrase: %v", name, err)
		}

		for _, parse := range []func([]byte, []byte) error{
			func(d, p []byte) error { _, err := ParsePrivateKeyWithPassphrase(d, p); return err },
			func(d, p []byte) error { _, err := ParsePublicKeyWithPassphrase(d, p); return err },
		} {
			if err := parse(data, nil); !errors.Is(err, ErrPassphraseMissing) {
				t.Errorf("%s: without a passphrase: %v, want ErrPassphraseMissing", name, err)
			}
			if err := parse(data, []byte("wrong")); !errors.Is(err, ErrWrongPassphrase) {
				t.Errorf("%s: a wrong passphrase: %v, want ErrWrongPassphrase", name, err)
			}
		}
	}
	// A passphrase given for a key that has none is not needed, and harmless.
	plain := privateKeyForms(t, testKeys(t)["p256"])["openssh"]
	if _, err := ParsePrivateKeyWithPassphrase(plain, []byte("unneeded")); err != nil {
		t.Errorf("an unprotected key with a passphrase: %v", err)
	}
}

// TestParseShortRSAKey proves that an RSA key under 2048 bits is refused
// with the same message in every form and for both uses, naming its size
// and the minimum, instead of a message about its form.
func TestParseShortRSAKey(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(rk, "")
	if err != nil {
		t.Fatal(err)
	}
	pkix, err := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(&rk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	const want = "RSA key of 1024 bits; token_v2 needs at least 2048"
	forms := map[string][]byte{
		"openssh": pem.EncodeToMemory(block),
		"pkcs1":   pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}),
	}
	for form, data := range forms {
		if _, err := ParsePrivateKey(data); err == nil || err.Error() != want {
			t.Errorf("private %s: %v, want %q", form, err, want)
		}
	}
	forms["pkix"] = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix})
	forms["authorized_keys"] = ssh.MarshalAuthorizedKey(sshPub)
	for form, data := range forms {
		if _, err := ParsePublicKey(data); err == nil || err.Error() != want {
			t.Errorf("public %s: %v, want %q", form, err, want)
		}
	}
}

// TestParseEncryptedPKCS8 proves that an encrypted PKCS#8 key, which is not
// read, is named as such rather than as an unknown form.
func TestParseEncryptedPKCS8(t *testing.T) {
	data := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{0x30, 0}})
	for _, err := range []error{
		func() error { _, err := ParsePrivateKeyWithPassphrase(data, []byte("x")); return err }(),
		func() error { _, err := ParsePublicKey(data); return err }(),
	} {
		if err == nil || !strings.Contains(err.Error(), "encrypted PKCS#8") {
			t.Errorf("error %v, want one naming an encrypted PKCS#8 key", err)
		}
	}
}

// FuzzParseKey: any key file, with or without a passphrase, is read or
// refused without a panic; a private key read is also read as the same
// public key, and a key that is read passes the key rules (checkKey).
func FuzzParseKey(f *testing.F) {
	for _, k := range testKeys(f) {
		for _, data := range privateKeyForms(f, k) {
			f.Add(data, []byte(nil))
		}
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(testKeys(f)["p256"].signer, "", []byte("pw"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pem.EncodeToMemory(block), []byte("pw"))
	f.Add(pem.EncodeToMemory(block), []byte("wrong"))
	f.Add([]byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n"), []byte("x"))
	f.Add([]byte(`{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`), []byte(nil))
	f.Fuzz(func(t *testing.T, data, passphrase []byte) {
		signer, privErr := ParsePrivateKeyWithPassphrase(data, passphrase)
		pub, pubErr := ParsePublicKeyWithPassphrase(data, passphrase)
		if privErr == nil {
			if pubErr != nil || !reflect.DeepEqual(pub, signer.Public()) {
				t.Fatalf("a private key read is not read as its public key: %v", pubErr)
			}
		}
		if pubErr == nil {
			if err := checkKey(pub); err != nil {
				t.Fatalf("a key that breaks the rules was read: %v", err)
			}
		}
	})
}
