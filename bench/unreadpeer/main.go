// Command unreadpeer is a load program for bench/unreadpeer.sh: a peer that opens many gRPC
// streams on one HTTP/2 connection to the gateway and never reads them. It speaks raw HTTP/2
// over TLS with a client certificate, opens -streams StreamingOutputCall streams each asking
// the node for -size bytes, acknowledges SETTINGS and answers PINGs, but never sends a
// WINDOW_UPDATE, so everything the node sends beyond the peer's first 64 KiB waits in the
// gateway. It prints the gateway's resident memory (VmRSS of -pid) before the streams and once
// it has settled, how many streams the gateway refused (grpc-status 8), and the median time of
// a unary call of another peer (-other-cert) before and while the streams are held.
//
// It is a measurement tool, not a test: it connects to loopback only and stops by itself.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
)

func main() {
	var (
		addr      = flag.String("addr", "127.0.0.1:29211", "the gateway's gRPC port (loopback)")
		name      = flag.String("servername", "localhost", "TLS server name")
		caFile    = flag.String("ca", "", "CA of the gateway's server certificate (PEM)")
		certFile  = flag.String("cert", "", "client certificate of the peer that never reads (PEM)")
		keyFile   = flag.String("key", "", "its key (PEM)")
		otherCert = flag.String("other-cert", "", "client certificate of another peer (PEM), for the unary timings; none if empty")
		otherKey  = flag.String("other-key", "", "its key (PEM)")
		pid       = flag.Int("pid", 0, "the gateway's process id")
		streams   = flag.Int("streams", 150, "how many streams to open")
		size      = flag.Int("size", 8<<20, "bytes each stream asks the node for")
		settle    = flag.Duration("settle", 60*time.Second, "longest wait for the gateway's memory to settle")
	)
	flag.Parse()
	if err := run(*addr, *name, *caFile, *certFile, *keyFile, *otherCert, *otherKey, *pid, *streams, *size, *settle); err != nil {
		fmt.Fprintln(os.Stderr, "unreadpeer:", err)
		os.Exit(1)
	}
}

func run(addr, name, caFile, certFile, keyFile, otherCert, otherKey string, pid, streams, size int, settle time.Duration) error {
	if host, _, err := net.SplitHostPort(addr); err != nil || !net.ParseIP(host).IsLoopback() {
		return fmt.Errorf("-addr %q is not a loopback address", addr)
	}
	if pid <= 0 {
		return errors.New("-pid is required")
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s holds no certificate", caFile)
	}
	peer, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	base := &tls.Config{RootCAs: pool, ServerName: name}

	var other *timer
	if otherCert != "" {
		if other, err = newTimer(addr, base, otherCert, otherKey); err != nil {
			return err
		}
		defer other.close()
	}
	before, err := rss(pid)
	if err != nil {
		return err
	}
	fmt.Printf("gateway RSS before:  %6.1f MiB\n", mib(before))
	if other != nil {
		fmt.Printf("other peer, unary call (median of 20) before: %v\n", other.median(20))
	}

	cfg := base.Clone()
	cfg.Certificates = []tls.Certificate{peer}
	cfg.NextProtos = []string{"h2"}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	if conn.ConnectionState().NegotiatedProtocol != "h2" {
		return errors.New("the gateway did not negotiate h2")
	}
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		return err
	}
	p := &unreadPeer{fr: http2.NewFramer(conn, conn)}
	if err := p.fr.WriteSettings(); err != nil {
		return err
	}
	go p.readLoop()

	msg, err := request(size)
	if err != nil {
		return err
	}
	for i := range streams {
		if err := p.open(uint32(2*i+1), name, msg); err != nil {
			return fmt.Errorf("opening stream %d: %v", i+1, err)
		}
	}

	// Wait until the gateway's memory stops growing: no change over 1 MiB for 3 s.
	var samples []uint64
	deadline := time.Now().Add(settle)
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		v, err := rss(pid)
		if err != nil {
			return err
		}
		samples = append(samples, v)
		if n := len(samples); n >= 6 {
			window := samples[n-6:]
			if slices.Max(window)-slices.Min(window) < 1<<20 {
				break
			}
		}
	}
	after := samples[len(samples)-1]
	fmt.Printf("gateway RSS settled: %6.1f MiB (peak %.1f MiB), +%.1f MiB for %d streams of %d MiB asked\n",
		mib(after), mib(slices.Max(samples)), mib(after)-mib(before), streams, size>>20)
	fmt.Printf("streams refused (grpc-status 8): %d; other ends: %d; DATA received by the peer: %d bytes\n",
		p.exhausted.Load(), p.ended.Load()-p.exhausted.Load(), p.data.Load())
	if err := p.err.Load(); err != nil {
		fmt.Printf("connection: %v\n", *err)
	}
	if other != nil {
		fmt.Printf("other peer, unary call (median of 20) while the streams are held: %v\n", other.median(20))
	}
	return nil
}

// request is one gRPC message: a StreamingOutputCallRequest asking for size bytes in
// responses of at most 1 MiB.
func request(size int) ([]byte, error) {
	req := &testgrpc.StreamingOutputCallRequest{}
	for left := size; left > 0; left -= 1 << 20 {
		req.ResponseParameters = append(req.ResponseParameters, &testgrpc.ResponseParameters{Size: int32(min(left, 1<<20))})
	}
	body, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	msg := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(msg[1:], uint32(len(body)))
	return append(msg, body...), nil
}

// unreadPeer is the HTTP/2 connection of the peer that never reads.
type unreadPeer struct {
	fr        *http2.Framer
	data      atomic.Int64 // DATA bytes received
	ended     atomic.Int64 // streams the gateway ended (trailers or RST_STREAM)
	exhausted atomic.Int64 // of which with grpc-status 8
	err       atomic.Pointer[error]
	writeMu   sync.Mutex // the framer's writes, from open and from readLoop
}

// open starts stream id: HEADERS of a StreamingOutputCall, then the request message, ending
// the peer's side.
func (p *unreadPeer) open(id uint32, authority string, msg []byte) error {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "https"}, {":authority", authority},
		{":path", "/grpc.testing.TestService/StreamingOutputCall"},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			return err
		}
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	if err := p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		return err
	}
	return p.fr.WriteData(id, true, msg)
}

// readLoop reads what the gateway sends: it acknowledges SETTINGS and answers PINGs (neither
// gives the gateway any window) and counts DATA and ended streams. It never sends WINDOW_UPDATE.
func (p *unreadPeer) readLoop() {
	dec := hpack.NewDecoder(4096, nil)
	ended := make(map[uint32]bool) // a stream may end twice: trailers, then RST_STREAM
	end := func(id uint32, exhausted bool) {
		if !ended[id] {
			ended[id] = true
			p.ended.Add(1)
			if exhausted {
				p.exhausted.Add(1)
			}
		}
	}
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			p.err.Store(&err)
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				p.writeMu.Lock()
				err = p.fr.WriteSettingsAck()
				p.writeMu.Unlock()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				p.writeMu.Lock()
				err = p.fr.WritePing(true, f.Data)
				p.writeMu.Unlock()
			}
		case *http2.DataFrame:
			p.data.Add(int64(len(f.Data())))
		case *http2.HeadersFrame:
			fields, derr := dec.DecodeFull(f.HeaderBlockFragment())
			if derr != nil {
				err = derr
				break
			}
			if f.StreamEnded() {
				end(f.StreamID, slices.Contains(fields, hpack.HeaderField{Name: "grpc-status", Value: "8"}))
			}
		case *http2.RSTStreamFrame:
			end(f.StreamID, false)
		}
		if err != nil {
			p.err.Store(&err)
			return
		}
	}
}

// timer times unary calls of another peer, a grpc-go client on its own connection.
type timer struct {
	conn *grpc.ClientConn
	cl   testgrpc.TestServiceClient
}

func newTimer(addr string, base *tls.Config, certFile, keyFile string) (*timer, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cfg := base.Clone()
	cfg.Certificates = []tls.Certificate{cert}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, err
	}
	return &timer{conn: conn, cl: testgrpc.NewTestServiceClient(conn)}, nil
}

func (t *timer) close() { t.conn.Close() }

// median makes n unary calls asking for 1 KiB and returns the median time, or an error text.
func (t *timer) median(n int) string {
	var times []time.Duration
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		_, err := t.cl.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: 1024})
		cancel()
		if err != nil {
			return "failed: " + err.Error()
		}
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	return times[len(times)/2].Round(10 * time.Microsecond).String()
}

// rss is the resident memory of process pid, from /proc.
func rss(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for process %d", pid)
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
