package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/nutsgate/nutsgate/fleet"
	"github.com/nutsgate/nutsgate/mtlsident"
	"github.com/nutsgate/nutsgate/pki"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI is the admin API of the `nutsgate` app, on Caddy's admin
// endpoint: its gateway-wide deny list, and the state of revocation
// checking.
//
//	GET    /nutsgate/pki                          every CRL and denylist source, as JSON
//	GET    /nutsgate/deny                         the entries, a JSON array of strings
//	POST   /nutsgate/deny {"entry": "CN=..."}     deny a client
//	DELETE /nutsgate/deny {"entry": "CN=..."}     lift a denial
//
// A change is written to the app's deny_file atomically before the answer
// (200, with the entries in force; its Nutsgate-Deny-Changed header is
// "false" when a POST's entry was already listed or a DELETE's was not
// listed, which changes nothing), takes effect for the next request, and
// ends the open requests of a client it denies. With the app's redis block,
// the list is the fleet's: a change is made in Redis first, and is in force
// on every replica within a second; while Redis is unavailable, changes are
// refused with 503 and none is made. No config reload happens,
// so no connection is dropped. Invalid JSON, an empty or malformed entry:
// 400. Without a deny_file: 409.
//
// /nutsgate/pki answers {"refresh", "max_stale", "state_dir", "sources"},
// each source {"kind": "crl" or "denylist", "source", "issuer",
// "last_success", "last_attempt", "this_update", "next_update", "number",
// "entries", "last_error"}; 404 while revocation checking is not
// configured (no pki block and no nuts_pki verifier).
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.nutsgate",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the deny-list and pki routes.
func (a AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/nutsgate/deny", Handler: caddy.AdminHandlerFunc(a.serveDeny)},
		{Pattern: "/nutsgate/pki", Handler: caddy.AdminHandlerFunc(a.servePKI)},
	}
}

// PKIStatus is the answer of GET /nutsgate/pki.
type PKIStatus struct {
	Refresh  string             `json:"refresh"`
	MaxStale string             `json:"max_stale"`
	StateDir string             `json:"state_dir"`
	Sources  []pki.SourceStatus `json:"sources"`
}

func (AdminAPI) servePKI(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed; use GET", r.Method)}
	}
	c := pkiInForce()
	if c == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("revocation checking is not configured (no pki block in the nutsgate global option, no nuts_pki verifier)")}
	}
	cfg := c.Config()
	st := PKIStatus{Refresh: cfg.Refresh.String(), MaxStale: "off", StateDir: cfg.StateDir, Sources: c.Status()}
	if cfg.MaxStale > 0 {
		st.MaxStale = cfg.MaxStale.String()
	}
	if st.Sources == nil {
		st.Sources = []pki.SourceStatus{}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(st)
}

// denyChangedHeader, on the answer to a POST or DELETE of /nutsgate/deny,
// says whether the list changed: "false" when the entry was already listed
// (POST) or not listed (DELETE).
const denyChangedHeader = "Nutsgate-Deny-Changed"

// maxAdminBody bounds a request body of the deny-list API.
const maxAdminBody = 64 << 10

func (AdminAPI) serveDeny(w http.ResponseWriter, r *http.Request) error {
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
	switch shared := denySyncInForce(); {
	case shared != nil:
		changed, err = shared.Edit(r.Context(), entry, r.Method == http.MethodPost)
	case r.Method == http.MethodPost:
		changed, err = store.Add(entry)
	default:
		changed, err = store.Remove(entry)
	}
	if errors.Is(err, mtlsident.ErrNoFile) {
		return caddy.APIError{HTTPStatus: http.StatusConflict, Err: err}
	}
	if errors.Is(err, fleet.ErrUnavailable) {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: fmt.Errorf("deny list not changed: %v", err)}
	}
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	caddy.Log().Named("admin.api.nutsgate").Info("deny list changed",
		zap.String("method", r.Method), zap.String("entry", entry.Text), zap.Bool("changed", changed), zap.String("file", store.Path()))
	w.Header().Set(denyChangedHeader, strconv.FormatBool(changed))
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
var _ caddy.AdminRouter = AdminAPI{}
