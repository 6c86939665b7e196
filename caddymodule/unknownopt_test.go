package caddymodule

import (
	"strings"
	"testing"
)

// TestUnknownOptionNamedFirst proves that every directive and block of
// nutsgate reports a misspelled option name as unrecognized, with file and
// line, whatever number of values follows it: the name is checked before
// the values are counted, so a typo is never reported as a wrong number of
// values.
func TestUnknownOptionNamedFirst(t *testing.T) {
	t.Parallel()
	site := func(block string) string { return ":80 {\n" + block + "\n respond 200\n}\n" }
	global := func(block string) string { return "{\n nutsgate {\n" + block + "\n }\n}\n:80 {\n respond 200\n}\n" }
	// Each block puts the unknown option on line 3 of the Caddyfile.
	for _, tc := range []struct{ name, body, want string }{
		{"mtls_ident no value", site(" mtls_ident {\n requre\n }"), `unrecognized subdirective "requre", at Caddyfile:3`},
		{"mtls_ident two values", site(" mtls_ident {\n forward_headr X-A X-B\n }"), `unrecognized subdirective "forward_headr", at Caddyfile:3`},
		{"client_rate_limit no value", site(" client_rate_limit {\n rat\n rate 5/1s\n }"), `unrecognized subdirective "rat", at Caddyfile:3`},
		{"client_rate_limit two values", site(" client_rate_limit {\n bursts 1 2\n rate 5/1s\n }"), `unrecognized subdirective "bursts", at Caddyfile:3`},
		{"token_v2 no value", site(" route {\n token_v2 {\n authorized_key\n }\n }"), `unrecognized subdirective "authorized_key", at Caddyfile:4`},
		{"token_v2 two values", site(" route {\n token_v2 {\n audiences a b\n }\n }"), `unrecognized subdirective "audiences", at Caddyfile:4`},
		{"cors no value", site(" cors {\n origin\n }"), `unrecognized subdirective "origin", at Caddyfile:3`},
		{"cors two values", site(" cors {\n maxage 1s 2s\n }"), `unrecognized subdirective "maxage", at Caddyfile:3`},
		{"path_guard block", site(" path_guard {\n strict\n }"), `unrecognized subdirective "strict": path_guard takes no options, at Caddyfile:3`},
		{"nuts_node no value", site(" reverse_proxy h2c://a:1 {\n transport nuts_node {\n stream_bufer\n }\n }"), `unrecognized subdirective stream_bufer, at Caddyfile:4`},
		{"nuts_node two values", site(" reverse_proxy h2c://a:1 {\n transport nuts_node {\n stream_buffers 1MiB 2MiB\n }\n }"), `unrecognized subdirective stream_buffers, at Caddyfile:4`},
		{"nutsgate no value", global(" deny_fil"), `unrecognized subdirective "deny_fil", at Caddyfile:3`},
		{"nutsgate two values", global(" state_dirs a b"), `unrecognized subdirective "state_dirs", at Caddyfile:3`},
		{"redis no value", global(" redis {\n adress\n }"), `unrecognized redis subdirective "adress", at Caddyfile:4`},
		{"redis two values", global(" redis {\n address redis://a\n prefx a b\n }"), `unrecognized redis subdirective "prefx", at Caddyfile:5`},
		{"pki no value", global(" pki {\n refesh\n }"), `unrecognized pki subdirective "refesh", at Caddyfile:4`},
		{"pki two values", global(" pki {\n max_stal 1h 2h\n }"), `unrecognized pki subdirective "max_stal", at Caddyfile:4`},
		{"denylist no value", global(" pki {\n denylist {\n ur\n }\n }"), `unrecognized denylist subdirective "ur", at Caddyfile:5`},
		{"denylist two values", global(" pki {\n denylist {\n trusted_signr a b\n }\n }"), `unrecognized denylist subdirective "trusted_signr", at Caddyfile:5`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := adapt(tc.body)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one holding %q", err, tc.want)
			}
		})
	}
}
