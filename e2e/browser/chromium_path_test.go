package browser

import (
	"io/fs"
	"strings"
	"testing"
)

// TestFindChromium: CHROME_PATH wins when set (and is an error naming it when it is not an
// executable); otherwise the first of Chromium's usual names on PATH (chromium,
// chromium-browser, google-chrome, google-chrome-stable); with none, an error that names them
// all and CHROME_PATH.
func TestFindChromium(t *testing.T) {
	lookIn := func(found ...string) func(string) (string, error) {
		return func(name string) (string, error) {
			for _, f := range found {
				if strings.HasSuffix(f, "/"+name) || f == name {
					return f, nil
				}
			}
			return "", fs.ErrNotExist
		}
	}
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "CHROME_PATH" {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		name, chromePath string
		found            []string
		want             string
	}{
		{"Debian", "", []string{"/usr/bin/chromium"}, "/usr/bin/chromium"},
		{"Ubuntu", "", []string{"/usr/bin/chromium-browser"}, "/usr/bin/chromium-browser"},
		{"Chrome", "", []string{"/opt/bin/google-chrome"}, "/opt/bin/google-chrome"},
		{"Chrome stable", "", []string{"/opt/bin/google-chrome-stable"}, "/opt/bin/google-chrome-stable"},
		{"chromium first", "", []string{"/opt/bin/google-chrome", "/usr/bin/chromium"}, "/usr/bin/chromium"},
		{"CHROME_PATH wins", "/home/ci/chrome/chrome", []string{"/usr/bin/chromium", "/home/ci/chrome/chrome"}, "/home/ci/chrome/chrome"},
	} {
		got, err := findChromium(env(tc.chromePath), lookIn(tc.found...))
		if err != nil || got != tc.want {
			t.Errorf("%s: findChromium = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}

	_, err := findChromium(env("/nowhere/chrome"), lookIn("/usr/bin/chromium"))
	if err == nil || !strings.Contains(err.Error(), "CHROME_PATH") || !strings.Contains(err.Error(), "/nowhere/chrome") {
		t.Errorf("CHROME_PATH not an executable: error %v, want one naming CHROME_PATH and its value", err)
	}
	_, err = findChromium(env(""), lookIn())
	if err == nil {
		t.Fatal("no browser anywhere: no error")
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "CHROME_PATH"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("no browser anywhere: error %q does not name %s", err, name)
		}
	}
}
