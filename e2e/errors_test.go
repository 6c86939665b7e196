package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/nutsgate/nutsgate/internal/e2ebin"
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

// TestDenyFileDirectoryValidated proves that `nutsgate validate` refuses a nutsgate app whose
// deny_file lies in a directory that is missing, is not a directory, or that the gateway cannot
// write in (the file is replaced through a temporary file there, so the first `deny add` would
// otherwise fail mid-incident): exit status non-zero and one line naming the file and the problem.
// The unwritable case runs the gateway as nobody when the tests run as root, for whom every
// directory is writable.
func TestDenyFileDirectoryValidated(t *testing.T) {
	t.Parallel()
	// A directory every user can enter, holding a copy of the binary every user can run.
	base, err := os.MkdirTemp("", "nutsgate-denydir-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "nutsgate")
	copyFile(t, binPath, bin, 0o755)
	notDir := filepath.Join(base, "file")
	readOnly := filepath.Join(base, "read-only")
	writable := filepath.Join(base, "writable")
	if err := errors.Join(os.WriteFile(notDir, nil, 0o644), os.Mkdir(readOnly, 0o555), os.Mkdir(writable, 0o777),
		os.Chmod(readOnly, 0o555), os.Chmod(writable, 0o777)); err != nil {
		t.Fatal(err)
	}

	validate := func(t *testing.T, denyFile string) result {
		dir, err := os.MkdirTemp(base, "config-")
		if err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(dir, "Caddyfile")
		body := fmt.Sprintf("{\n\tadmin off\n\tnutsgate {\n\t\tdeny_file %s\n\t}\n}\n\nhttp://127.0.0.1:1 {\n\trespond 200\n}\n", denyFile)
		if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		args := []string{bin, "validate", "--config", cfg, "--adapter", "caddyfile"}
		if os.Geteuid() == 0 {
			args = append([]string{"setpriv", fmt.Sprintf("--reuid=%d", nobody), fmt.Sprintf("--regid=%d", nobody), "--clear-groups"}, args...)
		}
		ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = e2ebin.Env(base)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err = cmd.Run()
		res := result{stdout: stdout.String(), stderr: stderr.String()}
		var exitErr *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &exitErr):
			res.code = exitErr.ExitCode()
		default:
			t.Fatalf("validate: %v", err)
		}
		return res
	}

	for _, c := range []struct{ name, denyFile, problem string }{
		{"missing directory", filepath.Join(base, "missing", "deny"), "directory " + filepath.Join(base, "missing") + " does not exist"},
		{"not a directory", filepath.Join(notDir, "deny"), notDir + " is not a directory"},
		{"read-only directory", filepath.Join(readOnly, "deny"), "the gateway cannot write in directory " + readOnly},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			res := validate(t, c.denyFile)
			if res.code == 0 {
				t.Fatalf("validate: exit status 0, want non-zero\n%s%s", res.stdout, res.stderr)
			}
			want := "deny_file " + c.denyFile + ": " + c.problem
			var lines []string
			for _, l := range strings.Split(res.stderr, "\n") {
				if strings.Contains(l, want) {
					lines = append(lines, l)
				}
			}
			if len(lines) != 1 {
				t.Errorf("stderr does not hold one line naming %q:\n%s", want, res.stderr)
			}
		})
	}
	t.Run("writable directory", func(t *testing.T) {
		t.Parallel()
		if res := validate(t, filepath.Join(writable, "deny")); res.code != 0 {
			t.Errorf("validate: exit status %d\n%s", res.code, res.stderr)
		}
		if entries, _ := os.ReadDir(writable); len(entries) != 0 {
			t.Errorf("validate left %d files in the deny_file's directory", len(entries))
		}
	})
}

// TestVersion proves that `nutsgate version` (and --version) prints nutsgate's own version
// beside Caddy's, on one line.
func TestVersion(t *testing.T) {
	t.Parallel()
	want := regexp.MustCompile(`^nutsgate \S.* / Caddy v2\.11\.9( |$)`)
	for _, args := range [][]string{{"version"}, {"--version"}} {
		line := singleLine(t, runBin(t, cliTimeout, args...))
		if !want.MatchString(line) {
			t.Errorf("nutsgate %s printed %q, want it to match %s", strings.Join(args, " "), line, want)
		}
	}
}

// TestTokenKeyFileOpenSSLEncrypted proves the two forms OpenSSL encrypts keys in: a PEM key with
// OpenSSL's legacy encryption headers (openssl ec -aes256) is read with --passphrase-file, and
// gives the line of the plain key; an encrypted PKCS#8 key (openssl pkcs8 -topk8) is refused with
// a line that names it and says how to convert it, and the conversion it names (ssh-keygen -p)
// gives a key that is read.
func TestTokenKeyFileOpenSSLEncrypted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	plain, legacy, pkcs8 := filepath.Join(dir, "plain.pem"), filepath.Join(dir, "legacy.pem"), filepath.Join(dir, "pkcs8.pem")
	for _, args := range [][]string{
		{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", plain},
		{"ec", "-in", plain, "-aes256", "-passout", "pass:pw", "-out", legacy},
		{"pkcs8", "-topk8", "-v2", "aes256", "-in", plain, "-passout", "pass:pw", "-out", pkcs8},
	} {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	pass := writeFile(t, "passphrase", []byte("pw\n"))
	authKey := func(key string, extra ...string) result {
		return runBin(t, cliTimeout, append([]string{"token", "authorized-key", "--key", key, "--user", "alice"}, extra...)...)
	}
	want := singleLine(t, authKey(plain))
	if got := singleLine(t, authKey(legacy, "--passphrase-file", pass)); got != want {
		t.Errorf("legacy-encrypted PEM: %q, want %q", got, want)
	}
	assertCLIErrorLine(t, authKey(legacy), "Error: key file "+legacy+" is protected by a passphrase: give it with --passphrase-file")
	assertCLIErrorLine(t, authKey(pkcs8, "--passphrase-file", pass), "Error: key file "+pkcs8+
		": an encrypted PKCS#8 key is not read: convert it to a passphrase-protected OpenSSH key (ssh-keygen -p -f <file>) or decrypt it (openssl pkcs8)")
	if out, err := exec.Command("ssh-keygen", "-q", "-p", "-f", pkcs8, "-P", "pw", "-N", "pw").CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -p: %v\n%s", err, out)
	}
	if got := singleLine(t, authKey(pkcs8, "--passphrase-file", pass)); got != want {
		t.Errorf("PKCS#8 key converted by ssh-keygen -p: %q, want %q", got, want)
	}
}
