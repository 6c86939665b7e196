package caddymodule

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/nutsgate/nutsgate/mtlsident"
)

// withApp puts a in force (nil: no app) for a test.
func withApp(t testing.TB, a *App) {
	old := gateway.app.Swap(a)
	t.Cleanup(func() { gateway.app.Store(old) })
}

// withStore puts an app in force whose gateway-wide deny list is store (nil: no app).
func withStore(t testing.TB, store *mtlsident.Store) {
	if store == nil {
		withApp(t, nil)
		return
	}
	withApp(t, &App{store: store})
}

func TestAdminAPIDeny(t *testing.T) {
	path := filepath.Join(t.TempDir(), "deny")
	withStore(t, mtlsident.NewStore(path, nil))
	call := func(method, body string) (int, []string) {
		t.Helper()
		w := httptest.NewRecorder()
		err := AdminAPI{}.serveDeny(w, httptest.NewRequest(method, "/nutsgate/deny", strings.NewReader(body)))
		var apiErr caddy.APIError
		if errors.As(err, &apiErr) {
			return apiErr.HTTPStatus, nil
		}
		if err != nil {
			t.Fatal(err)
		}
		var entries []string
		if err := json.Unmarshal(w.Body.Bytes(), &entries); err != nil {
			t.Fatalf("answer %q: %v", w.Body, err)
		}
		return http.StatusOK, entries
	}
	if code, entries := call(http.MethodGet, ""); code != 200 || entries == nil || len(entries) != 0 {
		t.Fatalf("empty list: %d %v", code, entries)
	}
	if code, entries := call(http.MethodPost, `{"entry": "CN=node-a, O=Nuts"}`); code != 200 || len(entries) != 1 {
		t.Fatalf("add: %d %v", code, entries)
	}
	if data, _ := os.ReadFile(path); !strings.Contains(string(data), "CN=node-a, O=Nuts\n") {
		t.Fatalf("not persisted: %q", data)
	}
	for _, tc := range []struct {
		method, body string
		want         int
	}{
		{http.MethodPost, `{"entry": ""}`, 400},
		{http.MethodPost, `{"entry": "not a dn"}`, 400},
		{http.MethodPost, `{entry}`, 400},
		{http.MethodPost, `{"entry": "CN=a", "extra": 1}`, 400},
		{http.MethodPut, `{"entry": "CN=a"}`, 405},
	} {
		if code, _ := call(tc.method, tc.body); code != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.body, code, tc.want)
		}
	}
	if code, entries := call(http.MethodDelete, `{"entry": "cn=NODE-A,o=nuts"}`); code != 200 || len(entries) != 0 {
		t.Fatalf("remove: %d %v", code, entries)
	}
	// Nutsgate-Deny-Changed says whether a POST or DELETE changed the list;
	// either way the answer is 200 with the entries in force.
	for _, tc := range []struct{ method, body, want string }{
		{http.MethodDelete, `{"entry": "CN=node-a"}`, "false"},
		{http.MethodPost, `{"entry": "CN=node-a"}`, "true"},
		{http.MethodPost, `{"entry": "cn=NODE-A"}`, "false"},
		{http.MethodDelete, `{"entry": "cn=node-a"}`, "true"},
	} {
		w := httptest.NewRecorder()
		err := AdminAPI{}.serveDeny(w, httptest.NewRequest(tc.method, "/nutsgate/deny", strings.NewReader(tc.body)))
		if got := w.Header().Get("Nutsgate-Deny-Changed"); err != nil || w.Code != 200 || got != tc.want {
			t.Errorf("%s %s: %v, status %d, Nutsgate-Deny-Changed %q; want 200 and %q", tc.method, tc.body, err, w.Code, got, tc.want)
		}
	}
	withStore(t, mtlsident.NewStore("", nil))
	if code, _ := call(http.MethodPost, `{"entry": "CN=a"}`); code != http.StatusConflict {
		t.Fatalf("without deny_file: %d, want 409", code)
	}
}
