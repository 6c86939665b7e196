package caddymodule

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/nutsgate/nutsgate/handlers/tokenv2"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "token",
		Usage: "mint|authorized-key [flags]",
		Short: "Mints token_v2 bearer tokens and prints authorized_keys lines",
		Long: `
Works with the keys and tokens of token_v2 authentication.

"token mint" prints a token_v2 JWT signed with a private key (OpenSSH, PEM
PKCS#8/SEC1/PKCS#1, or JWK). The algorithm follows the key: Ed25519 EdDSA,
P-256 ES256, P-384 ES384, P-521 ES512, RSA PS512 (or RS512 with --alg RS512).
The kid is the key's SSH SHA-256 fingerprint, jti a fresh UUID, iat and nbf
now, and exp now plus --ttl (at most 24h).

"token authorized-key" prints the authorized_keys line for a private or
public key and a user name: the line to add to the gateway's authorized_keys
file so that tokens minted with the key and --iss <user> pass.`,
		CobraFunc: func(cmd *cobra.Command) {
			mint := &cobra.Command{
				Use:   "mint --key <file> --iss <user> --sub <subject> --aud <audience> [--ttl 1h] [--alg RS512]",
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
			authKey := &cobra.Command{
				Use:   "authorized-key --key <file> --user <name>",
				Short: "Prints the authorized_keys line for a key and a user name",
				Args:  cobra.NoArgs,
				RunE:  runCommand(cmdTokenAuthorizedKey),
			}
			authKey.Flags().String("key", "", "private or public key file (OpenSSH, PEM or JWK)")
			authKey.Flags().String("user", "", "user name: the iss of the tokens the key signs")
			cmd.AddCommand(mint, authKey)
		},
	})
}

// cmdTokenMint implements "nutsgate token mint".
func cmdTokenMint(fl caddycmd.Flags) (int, error) {
	data, err := readKeyFile(fl.String("key"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	signer, err := tokenv2.ParsePrivateKey(data)
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--key %s: %v", fl.String("key"), err)
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
	data, err := readKeyFile(fl.String("key"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	pub, err := tokenv2.ParsePublicKey(data)
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--key %s: %v", fl.String("key"), err)
	}
	line, err := tokenv2.AuthorizedKeyLine(pub, fl.String("user"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--user: %v", err)
	}
	fmt.Println(line)
	return caddy.ExitCodeSuccess, nil
}

// runCommand runs a subcommand and, when it fails, prints its error as one
// plain line on standard error and exits with its status.
func runCommand(f caddycmd.CommandFunc) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		status, err := f(caddycmd.Flags{FlagSet: cmd.Flags()})
		if err != nil {
			fmt.Fprintf(os.Stderr, "Error: %v\n", err)
			os.Exit(status)
		}
		return nil
	}
}

func readKeyFile(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("--key is required")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--key: %v", err)
	}
	return data, nil
}
