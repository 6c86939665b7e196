package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/nutsgate/nutsgate/mtlsident"
)

func init() {
	caddy.RegisterModule(AdminDeny{})
}

// AdminDeny is the admin API of the gateway-wide deny list of the
// `nutsgate` app, on Caddy's admin endpoint:
//
//	GET    /nutsgate/deny                         the entries, a JSON array of strings
//	POST   /nutsgate/deny {"entry": "CN=..."}     deny a client
//	DELETE /nutsgate/deny {"entry": "CN=..."}     lift a denial
//
// A change is written to the app's deny_file atomically before the answer
// (200, with the entries in force), takes effect for the next request, and
// ends the open requests of a client it denies. No config reload happens,
// so no connection is dropped. Invalid JSON, an empty or malformed entry:
// 400. Without a deny_file: 409.
type AdminDeny struct{}

// CaddyModule returns the Caddy module information.
func (AdminDeny) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.nutsgate",
		New: func() caddy.Module { return new(AdminDeny) },
	}
}

// Routes returns the deny-list route.
func (a AdminDeny) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/nutsgate/deny", Handler: caddy.AdminHandlerFunc(a.serveDeny)}}
}

// maxAdminBody bounds a request body of the deny-list API.
const maxAdminBody = 64 << 10

func (AdminDeny) serveDeny(w http.ResponseWriter, r *http.Request) error {
	store := globalDeny()
	switch r.Method {
	case http.MethodGet:
		return writeEntries(w, store.List())
	case http.MethodPost, http.MethodDelete:
	default:
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed; use GET, POST or DELETE", r.Method)}
	}
	var body struct {
		Entry string `json:"entry"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf(`body must be {"entry": "<subject DN or sha256:fingerprint>"}: %v`, err)}
	}
	entry, err := mtlsident.ParseEntry(body.Entry)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("entry: %v", err)}
	}
	var changed bool
	if r.Method == http.MethodPost {
		changed, err = store.Add(entry)
	} else {
		changed, err = store.Remove(entry)
	}
	if errors.Is(err, mtlsident.ErrNoFile) {
		return caddy.APIError{HTTPStatus: http.StatusConflict, Err: err}
	}
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	caddy.Log().Named("admin.api.nutsgate").Info("deny list changed",
		zap.String("method", r.Method), zap.String("entry", entry.Text), zap.Bool("changed", changed), zap.String("file", store.Path()))
	return writeEntries(w, store.List())
}

func writeEntries(w http.ResponseWriter, list *mtlsident.DenyList) error {
	texts := []string{}
	for _, e := range list.Entries() {
		texts = append(texts, e.Text)
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(texts)
}

// Interface guards
var _ caddy.AdminRouter = AdminDeny{}
