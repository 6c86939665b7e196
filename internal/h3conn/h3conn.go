// Package h3conn finds the QUIC connection that carries an HTTP/3 request
// served by quic-go's http3.Server, so that the connection can be closed
// from a handler.
//
// quic-go (v0.63) offers no public way to it from a request: its
// ResponseWriter keeps it in unexported fields, and the server's
// ConnContext hook, which would hand it over, is not reachable through
// Caddy. Of reads those two fields, after checking once, by reflection, that
// they are where and of the types it expects; if they are not (another
// quic-go), it returns an error instead of reading anything. The package's
// test runs against the quic-go in go.mod, so an upgrade that moves them
// fails it.
package h3conn

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sync/atomic"
	"unsafe"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// ErrLayout is returned when quic-go's response writer does not hold its
// connection where this package expects it.
var ErrLayout = errors.New("the HTTP/3 server's response writer is not laid out as expected")

// layout is where a response writer type holds its QUIC connection: the
// offset of its *rawConn field, and that field's offset of the *quic.Conn.
type layout struct {
	typ        reflect.Type
	rawConn    uintptr
	quicInConn uintptr
}

var known atomic.Pointer[layout]

// Of returns the QUIC connection of the HTTP/3 response w, unwrapping
// wrappers as http.ResponseController does. It returns nil and no error if w
// is not an HTTP/3 response of quic-go's server, or holds no connection; an
// error only if quic-go's response writer is not laid out as expected (so
// that a caller can warn once and for all).
func Of(w http.ResponseWriter) (*quic.Conn, error) {
	for {
		if _, ok := w.(http3.HTTPStreamer); ok {
			break
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil, nil
		}
		w = u.Unwrap()
	}
	t := reflect.TypeOf(w)
	l := known.Load()
	if l == nil || l.typ != t {
		var err error
		if l, err = layoutOf(t); err != nil {
			return nil, err
		}
		known.Store(l)
	}
	raw := *(*unsafe.Pointer)(unsafe.Add(reflect.ValueOf(w).UnsafePointer(), l.rawConn))
	if raw == nil { // a response not tied to a connection: nothing to close
		return nil, nil
	}
	return *(**quic.Conn)(unsafe.Add(raw, l.quicInConn)), nil
}

// layoutOf checks that t is a pointer to http3's responseWriter holding a
// `conn` pointer to a struct of the same package, itself holding a `conn`
// *quic.Conn, and returns the offsets.
func layoutOf(t reflect.Type) (*layout, error) {
	pkg := reflect.TypeFor[http3.Server]().PkgPath()
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct || t.Elem().PkgPath() != pkg {
		return nil, fmt.Errorf("%w: %v is not quic-go's", ErrLayout, t)
	}
	rw, ok := t.Elem().FieldByName("conn")
	if !ok || len(rw.Index) != 1 || rw.Type.Kind() != reflect.Pointer || rw.Type.Elem().Kind() != reflect.Struct || rw.Type.Elem().PkgPath() != pkg {
		return nil, fmt.Errorf("%w: %v has no conn field of http3's", ErrLayout, t)
	}
	qc, ok := rw.Type.Elem().FieldByName("conn")
	if !ok || len(qc.Index) != 1 || qc.Type != reflect.TypeFor[*quic.Conn]() {
		return nil, fmt.Errorf("%w: %v holds no *quic.Conn", ErrLayout, rw.Type)
	}
	return &layout{typ: t, rawConn: rw.Offset, quicInConn: qc.Offset}, nil
}
