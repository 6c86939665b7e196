package caddymodule

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// gRPC status codes of the refusals.
const (
	grpcInvalidArgument   = 3  // an ambiguous path (path_guard)
	grpcPermissionDenied  = 7  // a denied or unacceptable client certificate
	grpcResourceExhausted = 8  // over a rate limit or max_open
	grpcUnavailable       = 14 // early data, or a gateway still starting: the client retries
	grpcUnauthenticated   = 16 // no verified client certificate
)

// refuse answers a refused request: the gRPC way for gRPC, else as an
// HTTP error with status.
func refuse(w http.ResponseWriter, r *http.Request, status, grpcCode int, msg string) error {
	if isGRPC(r) {
		writeGRPCStatus(w, grpcCode, msg)
		return nil
	}
	return caddyhttp.Error(status, errors.New(msg))
}

// isGRPC reports whether r is a gRPC request, which must be refused the gRPC
// way: a client reads the status from grpc-status, not from the HTTP status.
func isGRPC(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// writeGRPCStatus refuses a gRPC request with a trailers-only response:
// HTTP 200, Content-Type application/grpc, and grpc-status and grpc-message
// in the only HEADERS frame, which ends the stream.
func writeGRPCStatus(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(code))
	h.Set("Grpc-Message", grpcMessage(msg))
	w.WriteHeader(http.StatusOK)
}

// grpcMessage percent-encodes a status message as the gRPC HTTP/2 protocol
// asks: every byte outside printable ASCII, and '%'.
func grpcMessage(msg string) string {
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < ' ' || c > '~' || c == '%' {
			b.WriteString("%" + strings.ToUpper(strconv.FormatUint(uint64(c)|0x100, 16)[1:]))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
