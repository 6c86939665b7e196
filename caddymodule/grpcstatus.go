package caddymodule

import (
	"net/http"
	"strconv"
	"strings"
)

// gRPC status codes of the refusals.
const (
	grpcResourceExhausted = 8
	grpcPermissionDenied  = 7
	grpcUnauthenticated   = 16
)

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
