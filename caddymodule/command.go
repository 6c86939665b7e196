package caddymodule

import (
	"bytes"
	"cmp"
	"crypto"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/nutsgate/nutsgate/handlers/tokenv2"
	"github.com/nutsgate/nutsgate/pki"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "deny",
		Usage: "add|remove|list [<entry>] [--address <admin>]",
		Short: "Changes the gateway-wide deny list of a running nutsgate",
		Long: `
Lists, adds or removes entries of the gateway-wide deny list through the
admin API of a running nutsgate (--address, default localhost:2019). An entry
is a subject DN as "openssl x509 -noout -subject -nameopt RFC2253" prints it,
such as "CN=node-a,O=Example,C=NL" (OpenSSL's default form, "C = NL, ...", is
refused), or sha256:<fingerprint> of a client certificate. A change is written to the
app's deny_file before it takes effect, ends the denied client's open
requests, and survives a restart. Removing an entry that is not listed is
an error (exit status 1); adding one already listed changes nothing and
says so on standard error.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.PersistentFlags().String("address", "", "admin API address (default localhost:2019)")
			for _, verb := range []struct{ name, method, short string }{
				{"add", http.MethodPost, "Denies a client"},
				{"remove", http.MethodDelete, "Lifts the denial of a client"},
			} {
				cmd.AddCommand(&cobra.Command{
					Use:   verb.name + " <entry>",
					Short: verb.short,
					Args:  cobra.ExactArgs(1),
					RunE:  runDeny(verb.method),
				})
			}
			cmd.AddCommand(&cobra.Command{
				Use:   "list",
				Short: "Prints the entries, one a line",
				Args:  cobra.NoArgs,
				RunE:  runDeny(http.MethodGet),
			})
		},
	})
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "pki",
		Usage: "status [--address <admin>] [--json]",
		Short: "Shows the revocation checking of a running nutsgate",
		Long: `
"pki status" prints, through the admin API of a running nutsgate (--address,
default localhost:2019), every CRL and denylist source the gateway checks
client certificates with: when it was last fetched, what it holds, when it is
next due, and the error of the last fetch if it failed. One line a source;
--json prints the admin API's answer as it is.`,
		CobraFunc: func(cmd *cobra.Command) {
			status := &cobra.Command{
				Use:   "status [--address <admin>] [--json]",
				Short: "Prints every CRL and denylist source and its state",
				Args:  cobra.NoArgs,
				RunE:  exitOnError(runPKIStatus),
			}
			status.Flags().String("address", "", "admin API address (default localhost:2019)")
			status.Flags().Bool("json", false, "print the admin API's JSON")
			cmd.AddCommand(status)
		},
	})
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "token",
		Usage: "mint|authorized-key [flags]",
		Short: "Mints token_v2 bearer tokens and prints authorized_keys lines",
		Long: `
Works with the keys and tokens of token_v2 authentication.

"token mint" prints a token_v2 JWT signed with a private key (OpenSSH, PEM
PKCS#8/SEC1/PKCS#1, or JWK). A key protected by a passphrase (OpenSSH, or
PEM with OpenSSL's legacy encryption) is read with --passphrase-file: the
first line of that file is the passphrase. The algorithm follows the key: Ed25519 EdDSA,
P-256 ES256, P-384 ES384, P-521 ES512, RSA PS512 (or RS512 with --alg RS512).
The kid is the key's SSH SHA-256 fingerprint, jti a fresh UUID, iat and nbf
now, and exp now plus --ttl (at most 24h).

"token authorized-key" prints the authorized_keys line for a private or
public key and a user name: the line to add to the gateway's authorized_keys
file so that tokens minted with the key and --iss <user> pass.`,
		CobraFunc: func(cmd *cobra.Command) {
			mint := &cobra.Command{
				Use:   "mint --key <file> --iss <user> --sub <subject> --aud <audience> [--ttl 1h] [--alg RS512] [--passphrase-file <file>]",
				Short: "Prints a token_v2 JWT signed with a private key",
				Args:  cobra.NoArgs,
				RunE:  runCommand(cmdTokenMint),
			}
			mint.Flags().String("key", "", "private key file (OpenSSH, PEM or JWK)")
			mint.Flags().String("iss", "", "issuer: the key's user name in authorized_keys")
			mint.Flags().String("sub", "", "subject")
			mint.Flags().String("aud", "", "audience: the gateway's configured audience")
			mint.Flags().Duration("ttl", time.Hour, "lifetime of the token, at most 24h")
			mint.Flags().String("alg", "", "RS512 to sign with an RSA key using RS512 instead of PS512")
			mint.Flags().String("passphrase-file", "", "file whose first line is the passphrase of --key")
			authKey := &cobra.Command{
				Use:   "authorized-key --key <file> --user <name> [--passphrase-file <file>]",
				Short: "Prints the authorized_keys line for a key and a user name",
				Args:  cobra.NoArgs,
				RunE:  runCommand(cmdTokenAuthorizedKey),
			}
			authKey.Flags().String("key", "", "private or public key file (OpenSSH, PEM or JWK)")
			authKey.Flags().String("user", "", "user name: the iss of the tokens the key signs")
			authKey.Flags().String("passphrase-file", "", "file whose first line is the passphrase of --key")
			cmd.AddCommand(mint, authKey)
		},
	})
}

// cmdTokenMint implements "nutsgate token mint".
func cmdTokenMint(fl caddycmd.Flags) (int, error) {
	for _, name := range []string{"key", "iss", "sub", "aud"} {
		if fl.String(name) == "" {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--%s is required", name)
		}
	}
	var signer crypto.Signer
	err := readKey(fl, func(data, passphrase []byte) (err error) {
		signer, err = tokenv2.ParsePrivateKeyWithPassphrase(data, passphrase)
		return err
	})
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	var rs512 bool
	switch alg := fl.String("alg"); alg {
	case "":
	case "RS512":
		rs512 = true
	default:
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--alg %q: only RS512 may be chosen; the key decides otherwise", alg)
	}
	if _, isRSA := signer.Public().(*rsa.PublicKey); rs512 && !isRSA {
		return caddy.ExitCodeFailedStartup, errors.New("--alg RS512 needs an RSA key")
	}
	token, err := tokenv2.Mint(tokenv2.MintRequest{
		Key:      signer,
		Issuer:   fl.String("iss"),
		Subject:  fl.String("sub"),
		Audience: fl.String("aud"),
		TTL:      fl.Duration("ttl"),
		RS512:    rs512,
	})
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	fmt.Println(token)
	return caddy.ExitCodeSuccess, nil
}

// cmdTokenAuthorizedKey implements "nutsgate token authorized-key".
func cmdTokenAuthorizedKey(fl caddycmd.Flags) (int, error) {
	if fl.String("key") == "" {
		return caddy.ExitCodeFailedStartup, errors.New("--key is required")
	}
	var pub crypto.PublicKey
	err := readKey(fl, func(data, passphrase []byte) (err error) {
		pub, err = tokenv2.ParsePublicKeyWithPassphrase(data, passphrase)
		return err
	})
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	line, err := tokenv2.AuthorizedKeyLine(pub, fl.String("user"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--user: %v", err)
	}
	fmt.Println(line)
	return caddy.ExitCodeSuccess, nil
}

// readKey reads the files of --key and --passphrase-file and hands them to
// parse, turning its error into one that names the key file and says what
// to do.
func readKey(fl caddycmd.Flags, parse func(data, passphrase []byte) error) error {
	keyFile, passFile := fl.String("key"), fl.String("passphrase-file")
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("--key: %v", err)
	}
	var passphrase []byte
	if passFile != "" {
		if passphrase, err = readPassphrase(passFile); err != nil {
			return err
		}
	}
	switch err := parse(data, passphrase); {
	case err == nil:
		return nil
	case errors.Is(err, tokenv2.ErrPassphraseMissing):
		return fmt.Errorf("key file %s is protected by a passphrase: give it with --passphrase-file", keyFile)
	case errors.Is(err, tokenv2.ErrWrongPassphrase):
		return fmt.Errorf("key file %s: the passphrase of %s does not decrypt it", keyFile, passFile)
	default:
		return fmt.Errorf("key file %s: %v", keyFile, err)
	}
}

// readPassphrase returns the first line of path, without its line break.
func readPassphrase(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--passphrase-file: %v", err)
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		return nil, fmt.Errorf("--passphrase-file %s: the first line is empty", path)
	}
	return line, nil
}

// runDeny calls the deny-list admin API with method and prints the entries
// in force, one a line.
func runDeny(method string) func(*cobra.Command, []string) error {
	return exitOnError(func(cmd *cobra.Command, args []string) error {
		addr := cmd.Flag("address").Value.String()
		if addr == "" {
			addr = caddy.DefaultAdminListen
		}
		var body io.Reader
		if len(args) == 1 {
			b, err := json.Marshal(map[string]string{"entry": args[0]})
			if err != nil {
				return err
			}
			body = bytes.NewReader(b)
		}
		resp, err := caddycmd.AdminAPIRequest(addr, method, "/nutsgate/deny", nil, body)
		if err != nil {
			return fmt.Errorf("admin API at %s: %v", addr, err)
		}
		defer resp.Body.Close()
		var entries []string
		if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&entries); err != nil {
			return fmt.Errorf("admin API at %s: reading the answer: %v", addr, err)
		}
		// A gateway that does not send the header (an older one) is taken
		// to have changed the list.
		if resp.Header.Get(denyChangedHeader) == "false" {
			switch method {
			case http.MethodDelete:
				return fmt.Errorf("%s is not in the deny list", args[0])
			case http.MethodPost:
				fmt.Fprintf(os.Stderr, "%s is already listed\n", args[0])
			}
		}
		for _, e := range entries {
			fmt.Println(e)
		}
		return nil
	})
}

// runPKIStatus implements "nutsgate pki status".
func runPKIStatus(cmd *cobra.Command, _ []string) error {
	addr := cmp.Or(cmd.Flag("address").Value.String(), caddy.DefaultAdminListen)
	resp, err := caddycmd.AdminAPIRequest(addr, http.MethodGet, "/nutsgate/pki", nil, nil)
	if err != nil {
		return fmt.Errorf("admin API at %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("admin API at %s: reading the answer: %v", addr, err)
	}
	if cmd.Flag("json").Value.String() == "true" {
		_, err := os.Stdout.Write(body)
		return err
	}
	var st PKIStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("admin API at %s: reading the answer: %v", addr, err)
	}
	fmt.Printf("refresh %s, max_stale %s, state_dir %s\n", st.Refresh, st.MaxStale, st.StateDir)
	for _, s := range st.Sources {
		fmt.Println(sourceLine(s))
	}
	return nil
}

// sourceLine is one source of "pki status".
func sourceLine(s pki.SourceStatus) string {
	at := func(t *time.Time) string {
		if t == nil {
			return "never"
		}
		return t.Format(time.RFC3339)
	}
	line := fmt.Sprintf("%-8s %s  entries %d  last success %s", s.Kind, s.Source, s.Entries, at(s.LastSuccess))
	if s.Kind == "crl" {
		line += "  next update " + at(s.NextUpdate)
		if s.Number != "" {
			line += "  number " + s.Number
		}
		if s.Issuer != "" {
			line += fmt.Sprintf("  issuer %q", s.Issuer)
		}
	}
	if s.LastError != "" {
		line += "  error: " + strings.ReplaceAll(s.LastError, "\n", " ")
	}
	return line
}

// runCommand runs a subcommand and, when it fails, prints its error as one
// plain line on standard error and exits with its status.
func runCommand(f caddycmd.CommandFunc) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		status, err := f(caddycmd.Flags{FlagSet: cmd.Flags()})
		if err != nil {
			fail(status, err)
		}
		return nil
	}
}

// exitOnError runs a subcommand that fails with status 1.
func exitOnError(f func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := f(cmd, args); err != nil {
			fail(caddy.ExitCodeFailedStartup, err)
		}
		return nil
	}
}

// fail prints err as one line on standard error and exits with status.
func fail(status int, err error) {
	fmt.Fprintf(os.Stderr, "Error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	os.Exit(status)
}
