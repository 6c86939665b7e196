package caddymodule

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The directives run in the order the package registers, whatever order a
// site writes them in: path_guard first, then Caddy's tracing, cors,
// mtls_ident, client_rate_limit, basic_auth, token_v2, and the proxy.
func TestDirectiveOrder(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "authorized_keys")
	if err := os.WriteFile(keys, []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	site := `http://localhost:9999 {
	reverse_proxy 127.0.0.1:1
	token_v2 {
		authorized_keys ` + keys + `
		audience x
	}
	basic_auth {
		bob $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG
	}
	client_rate_limit {
		rate 1/1s
	}
	mtls_ident
	cors {
		origins https://a.example
	}
	tracing
	path_guard
}
`
	out, err := adaptCaddyfile(site)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct{ Routes []route } `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, r := range srv.Routes {
			got = append(got, r.handlers()...)
		}
	}
	want := []string{"path_guard", "tracing", "cors", "mtls_ident", "client_rate_limit", "authentication/http_basic", "authentication/token_v2", "reverse_proxy"}
	if !slices.Equal(got, want) {
		t.Errorf("handlers in order %v, want %v", got, want)
	}
}
