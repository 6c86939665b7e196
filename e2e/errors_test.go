package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// sshKeygen writes a key with ssh-keygen (as an operator makes one) into a fresh directory and
// returns the private key file; args are ssh-keygen's key options (-t, -b, -N).
func sshKeygen(t *testing.T, args ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "id")
	out, err := exec.Command("ssh-keygen", append([]string{"-q", "-C", "", "-f", path}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return path
}

// assertCLIErrorLine is assertCLIError that also wants stderr to be exactly want.
func assertCLIErrorLine(t *testing.T, res result, want string) {
	t.Helper()
	assertCLIError(t, res)
	if got := strings.TrimSuffix(res.stderr, "\n"); got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}

// TestTokenKeyFileErrors proves that `token mint` and `token authorized-key` say what is wrong
// with a key ssh-keygen made: one protected by a passphrase that was not given, or given wrong,
// and an RSA key shorter than token_v2's minimum (2048 bits) - and that --passphrase-file (its
// first line, without the line break) reads a protected key for both commands.
func TestTokenKeyFileErrors(t *testing.T) {
	t.Parallel()
	protected := sshKeygen(t, "-t", "ed25519", "-N", "correct horse")
	short := sshKeygen(t, "-t", "rsa", "-b", "1024", "-N", "")
	right := writeFile(t, "passphrase", []byte("correct horse\nsecond line ignored\n"))
	wrong := writeFile(t, "wrong-passphrase", []byte("incorrect horse\n"))
	empty := writeFile(t, "empty-passphrase", []byte("\nsecond line\n"))
	commands := map[string][]string{
		"mint":           {"token", "mint", "--iss", "alice", "--sub", "s", "--aud", testAudience},
		"authorized-key": {"token", "authorized-key", "--user", "alice"},
	}
	for name, base := range commands {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			run := func(extra ...string) result {
				return runBin(t, cliTimeout, append(append([]string{}, base...), extra...)...)
			}
			assertCLIErrorLine(t, run("--key", protected),
				"Error: key file "+protected+" is protected by a passphrase: give it with --passphrase-file")
			assertCLIErrorLine(t, run("--key", protected, "--passphrase-file", wrong),
				"Error: key file "+protected+": the passphrase of "+wrong+" does not decrypt it")
			assertCLIErrorLine(t, run("--key", short),
				"Error: key file "+short+": RSA key of 1024 bits; token_v2 needs at least 2048")
			none := filepath.Join(t.TempDir(), "none")
			assertCLIErrorLine(t, run("--key", protected, "--passphrase-file", none),
				"Error: --passphrase-file: open "+none+": no such file or directory")
			assertCLIErrorLine(t, run("--key", protected, "--passphrase-file", empty),
				"Error: --passphrase-file "+empty+": the first line is empty")
		})
	}

	pubLine, err := os.ReadFile(protected + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(pubLine)
	if err != nil {
		t.Fatal(err)
	}
	line := singleLine(t, runBin(t, cliTimeout, "token", "authorized-key", "--key", protected, "--passphrase-file", right, "--user", "alice"))
	if want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))) + " alice"; line != want {
		t.Errorf("authorized-key printed %q, want %q", line, want)
	}
	jws := singleLine(t, runBin(t, cliTimeout, "token", "mint", "--key", protected, "--passphrase-file", right,
		"--iss", "alice", "--sub", "s", "--aud", testAudience))
	if header, _ := decodeJWS(t, jws); header["kid"] != ssh.FingerprintSHA256(pub) || header["alg"] != "EdDSA" {
		t.Errorf("minted header %v, want kid %s and alg EdDSA", header, ssh.FingerprintSHA256(pub))
	}
}

// TestTokenMintRequiredFlags proves that `token mint` without one of its required flags names
// that flag, whatever else is given.
func TestTokenMintRequiredFlags(t *testing.T) {
	t.Parallel()
	key := newKey(t, ed25519Key, "alice").writeKeyFile(t, opensshPrivate)
	all := map[string]string{"--key": key, "--iss": "alice", "--sub": "s", "--aud": testAudience}
	for _, missing := range []string{"--key", "--iss", "--sub", "--aud"} {
		t.Run(missing, func(t *testing.T) {
			t.Parallel()
			args := []string{"token", "mint"}
			for flag, val := range all {
				if flag != missing {
					args = append(args, flag, val)
				}
			}
			assertCLIErrorLine(t, runBin(t, cliTimeout, args...), "Error: "+missing+" is required")
		})
	}
}
