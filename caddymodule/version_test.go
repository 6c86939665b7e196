package caddymodule

import (
	"runtime/debug"
	"testing"
)

// TestModuleVersion proves how nutsgate names its own version: the module's
// version when it was built as a dependency (xcaddy) or from a tagged
// checkout, (devel) with the VCS revision otherwise, and (devel) alone when
// nothing more is known.
func TestModuleVersion(t *testing.T) {
	const mod = "github.com/nutsgate/nutsgate"
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"main module, tagged", &debug.BuildInfo{Main: debug.Module{Path: mod, Version: "v0.3.1"}}, "v0.3.1"},
		{"main module, VCS", &debug.BuildInfo{Main: debug.Module{Path: mod, Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}}, "(devel) 0123456789ab+modified"},
		{"main module, nothing known", &debug.BuildInfo{Main: debug.Module{Path: mod, Version: "(devel)"}}, "(devel)"},
		{"dependency", &debug.BuildInfo{Main: debug.Module{Path: "caddy"}, Deps: []*debug.Module{{Path: mod, Version: "v0.4.0"}}}, "v0.4.0"},
		{"dependency, replaced", &debug.BuildInfo{Main: debug.Module{Path: "caddy"}, Deps: []*debug.Module{
			{Path: mod, Version: "v0.0.0", Replace: &debug.Module{Path: "/src/nutsgate"}}}}, "v0.0.0 => /src/nutsgate"},
		{"dependency, replaced as xcaddy does", &debug.BuildInfo{Main: debug.Module{Path: "caddy"}, Deps: []*debug.Module{
			{Path: mod, Version: "v0.0.0", Replace: &debug.Module{Path: "/src/nutsgate", Version: "(devel)"}}}}, "v0.0.0 => /src/nutsgate"},
		{"dependency, replaced by a version", &debug.BuildInfo{Main: debug.Module{Path: "caddy"}, Deps: []*debug.Module{
			{Path: mod, Version: "v0.4.0", Replace: &debug.Module{Path: "example.org/fork", Version: "v0.4.1"}}}}, "v0.4.0 => example.org/fork@v0.4.1"},
		{"not found", &debug.BuildInfo{Main: debug.Module{Path: "other"}}, "(devel)"},
		{"no build info", nil, "(devel)"},
	} {
		if got := moduleVersion(tc.bi); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
