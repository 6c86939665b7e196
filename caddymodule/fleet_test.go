package caddymodule

import (
	"strings"
	"testing"
)

func TestRedisCaddyfileAdapt(t *testing.T) {
	out, err := adapt(`{
	nutsgate {
		deny_file /var/lib/nutsgate/deny
		redis {
			address rediss://redis.internal:6379/2
			username {env.REDIS_USER}
			password {env.REDIS_PASSWORD}
			ca /etc/nutsgate/redis-ca.pem
			sentinel_master main
			sentinel_nodes 10.0.0.6:26379 10.0.0.7:26379
			prefix fleet-a
			timeout 50ms
		}
	}
}
:8443 {
	client_rate_limit {
		rate 50/1s
		zone n2n
		distributed
	}
	respond 200
}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"redis":{"address":"rediss://redis.internal:6379/2","username":"{env.REDIS_USER}","password":"{env.REDIS_PASSWORD}","ca":"/etc/nutsgate/redis-ca.pem","sentinel_master":"main","sentinel_nodes":["10.0.0.6:26379","10.0.0.7:26379"],"prefix":"fleet-a","timeout":50000000}`,
		`"distributed":true`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("adapted config lacks %s:\n%s", want, out)
		}
	}
	for _, tc := range []struct{ body, err string }{
		{"{\n nutsgate {\n redis {\n prefix x\n }\n }\n}\n:80", "redis: address is required"},
		{"{\n nutsgate {\n redis {\n address redis://a\n timeout 0s\n }\n }\n}\n:80", `redis timeout: "0s" is not a positive duration`},
		{"{\n nutsgate {\n redis {\n address redis://a\n sentinel_master m\n }\n }\n}\n:80", "sentinel_master needs sentinel_nodes"},
		{"{\n nutsgate {\n redis {\n address redis://a\n db 3\n }\n }\n}\n:80", `unrecognized redis subdirective "db"`},
		{":80 {\n client_rate_limit {\n rate 5/1s\n distributed yes\n }\n}", "wrong argument count"},
	} {
		_, err := adapt(tc.body)
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%q: error %v, want one naming the file and %q", tc.body, err, tc.err)
		}
	}
}
