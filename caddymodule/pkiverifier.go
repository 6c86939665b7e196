package caddymodule

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/nutsgate/nutsgate/pki"
)

func init() {
	caddy.RegisterModule(NutsPKIVerifier{})
}

// NutsPKIVerifier refuses the TLS handshake of a client whose certificate
// is revoked or banned, as a Nuts node refuses its peers: by the CRLs of
// every certificate of its verified chains and by the Nuts denylist, with
// the `pki` settings of the `nutsgate` app (its defaults if the app has no
// `pki` block). It runs on every handshake in which the client presents a
// certificate, resumed TLS sessions included, after the chain is verified:
// use it with client_auth mode verify_if_given or require_and_verify and a
// trust pool. A CRL the gateway has never held is fetched during the first
// handshake that needs it (at most 5 s). A refusal is logged at INFO with
// the client's subject, serial and reason, and counted in
// nutsgate_pki_refusals_total.
//
// Caddyfile, inside a `tls` block:
//
//	client_auth {
//	    mode require_and_verify
//	    trust_pool file <ca.pem>
//	    verifier nuts_pki
//	}
type NutsPKIVerifier struct {
	app     *App
	checker *pki.Checker
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (NutsPKIVerifier) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.client_auth.verifier.nuts_pki",
		New: func() caddy.Module { return new(NutsPKIVerifier) },
	}
}

// Provision takes the revocation checker of the nutsgate app.
func (v *NutsPKIVerifier) Provision(ctx caddy.Context) error {
	v.logger = ctx.Logger()
	if err := registerMetrics(ctx); err != nil {
		return err
	}
	app, err := ctx.App("nutsgate")
	if err != nil {
		return fmt.Errorf("loading the nutsgate app: %v", err)
	}
	v.app = app.(*App)
	v.checker, err = v.app.pkiChecker()
	return err
}

// VerifyClientCertificate refuses a revoked or banned client, or one whose
// status is unknown past max_stale.
func (v *NutsPKIVerifier) VerifyClientCertificate(rawCerts [][]byte, verifiedChains [][]*x509.Certificate) error {
	// On a reload, the checker takes over the previous one's CRLs when the
	// app starts; a handshake on the new listeners before that waits.
	if !v.app.awaitStart(context.Background()) {
		return errors.New("the gateway is not ready")
	}
	err := v.checker.Check(context.Background(), verifiedChains)
	if err == nil {
		watchExpiry(verifiedChains)
		return nil
	}
	var r *pki.Refusal
	if !errors.As(err, &r) {
		return err
	}
	pkiRefused(v.logger, "client certificate refused at the TLS handshake", r, verifiedChains, rawCerts)
	return fmt.Errorf("client certificate %s", r.Reason)
}

// pkiRefused counts a refusal of revocation checking in
// nutsgate_pki_refusals_total and logs it as msg, sampled per reason (see
// refusallog.go), with the client (its leaf), the certificate the refusal
// is about, the reason and its detail, and extra.
func pkiRefused(logger *zap.Logger, msg string, r *pki.Refusal, chains [][]*x509.Certificate, rawCerts [][]byte, extra ...zap.Field) {
	pkiRefusals.WithLabelValues(string(r.Reason)).Inc()
	c, sup := pkiRefusalLog.Check(logger, zapcore.InfoLevel, string(r.Reason), msg)
	if c == nil {
		return
	}
	fields := []zap.Field{zap.String("reason", string(r.Reason)), zap.String("detail", r.Detail)}
	var leaf *x509.Certificate
	if len(chains) > 0 && len(chains[0]) > 0 {
		leaf = chains[0][0]
	} else if len(rawCerts) > 0 {
		leaf, _ = x509.ParseCertificate(rawCerts[0])
	}
	if leaf != nil {
		fields = append(fields, zap.String("subject", leaf.Subject.String()), zap.String("serial", leaf.SerialNumber.String()))
	}
	if r.Cert != nil && r.Cert != leaf {
		fields = append(fields, zap.String("refused_certificate", r.Cert.Subject.String()), zap.String("refused_serial", r.Cert.SerialNumber.String()))
	}
	c.Write(append(append(fields, extra...), sup)...)
}

// UnmarshalCaddyfile reads `verifier nuts_pki`, which has no options: the
// app's pki block configures it.
func (v *NutsPKIVerifier) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume module name
	if d.NextArg() || d.NextBlock(d.Nesting()) {
		return d.Err("nuts_pki takes no options; configure revocation checking in the nutsgate global option's pki block")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner                  = (*NutsPKIVerifier)(nil)
	_ caddytls.ClientCertificateVerifier = (*NutsPKIVerifier)(nil)
	_ caddyfile.Unmarshaler              = (*NutsPKIVerifier)(nil)
)
