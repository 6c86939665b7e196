// Command tokflood is the load program of bench/token_flood.sh: it floods a token_v2 gateway
// with forged tokens from one or more loopback source addresses while a valid client with a
// cached token measures its latency, and reports the gateway's signature checks per second
// (from its metrics) and the valid client's p50 and p99, alone and during the flood.
//
// Each forged token carries the header of the valid token (so its kid names the valid key),
// fresh claims (a new jti, so no two are alike) and a random ECDSA signature (r and s in range,
// so that each costs a whole signature check).
// It talks to loopback addresses only and stops after the given durations.
package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "", "gateway URL of a token_v2 route, on a loopback address")
	metrics := flag.String("metrics", "", "the gateway's metrics URL")
	valid := flag.String("token", "", "a valid token")
	validFrom := flag.String("valid-from", "127.0.0.1", "source address of the valid client")
	from := flag.String("from", "127.0.0.1", "first source address of the flood")
	sources := flag.Int("sources", 1, "flood source addresses, counting up from -from")
	conns := flag.Int("conns", 16, "flood connections per source address")
	alone := flag.Duration("alone", 5*time.Second, "how long the valid client runs alone first")
	flood := flag.Duration("flood", 10*time.Second, "how long the flood runs")
	unknownKid := flag.Bool("unknown-kid", false, "forge tokens whose kid names no key (refused before any signature check), as a control")
	flag.Parse()
	if err := run(*url, *metrics, *valid, *validFrom, *from, *sources, *conns, *alone, *flood, *unknownKid); err != nil {
		fmt.Fprintln(os.Stderr, "tokflood:", err)
		os.Exit(1)
	}
}

func run(url, metricsURL, valid, validFrom, from string, sources, conns int, alone, flood time.Duration, unknownKid bool) error {
	if !strings.HasPrefix(url, "http://127.") || !strings.HasPrefix(metricsURL, "http://127.") {
		return errors.New("-url and -metrics must be http:// URLs on a loopback address")
	}
	parts := strings.Split(valid, ".")
	if len(parts) != 3 {
		return errors.New("-token is not a compact JWS")
	}
	sigLen := base64.RawURLEncoding.DecodedLen(len(parts[2]))
	claimsJSON, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return fmt.Errorf("-token claims: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(claimsJSON, &claims); err != nil {
		return fmt.Errorf("-token claims: %v", err)
	}
	if unknownKid {
		hj, err := base64.RawURLEncoding.DecodeString(parts[0])
		if err != nil {
			return fmt.Errorf("-token header: %v", err)
		}
		var h map[string]any
		if err := json.Unmarshal(hj, &h); err != nil {
			return fmt.Errorf("-token header: %v", err)
		}
		h["kid"] = "SHA256:nokeyhasthisfingerprintnokeyhasthisfingerpr"
		hj, _ = json.Marshal(h)
		parts[0] = base64.RawURLEncoding.EncodeToString(hj)
	}
	var seq atomic.Uint64
	forge := func() string {
		c := make(map[string]any, len(claims))
		for k, v := range claims {
			c[k] = v
		}
		c["jti"] = fmt.Sprintf("00000000-0000-4000-8000-%012x", seq.Add(1))
		b, _ := json.Marshal(c)
		sig := make([]byte, sigLen)
		rand.Read(sig)
		// An ECDSA signature is r and s, each as long as the curve's order: with the
		// first byte of each zero, both are below the order, so the gateway must do the
		// whole check to refuse them (random values above it are refused at once).
		sig[0], sig[sigLen/2] = 0, 0
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + base64.RawURLEncoding.EncodeToString(sig)
	}

	vc := client(validFrom)
	if code, err := get(vc, url, valid); err != nil || code != http.StatusOK {
		return fmt.Errorf("valid token: status %d, %v", code, err)
	}
	aloneLat, err := measure(vc, url, valid, alone)
	if err != nil {
		return err
	}

	ip := net.ParseIP(from).To4()
	if ip == nil || ip[0] != 127 {
		return fmt.Errorf("-from %q is not a loopback IPv4 address", from)
	}
	before, err := readMetrics(metricsURL)
	if err != nil {
		return err
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var statuses sync.Map
	for s := 0; s < sources; s++ {
		src := net.IPv4(127, ip[1], ip[2], ip[3]+byte(s)).String()
		for i := 0; i < conns; i++ {
			c := client(src)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					code, err := get(c, url, forge())
					if err != nil {
						code = -1
					}
					n, _ := statuses.LoadOrStore(code, new(atomic.Uint64))
					n.(*atomic.Uint64).Add(1)
				}
			}()
		}
	}
	start := time.Now()
	floodLat, err := measure(vc, url, valid, flood)
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start)
	if err != nil {
		return err
	}
	after, err := readMetrics(metricsURL)
	if err != nil {
		return err
	}
	fmt.Printf("flood: %d source(s) x %d connections, %.1f s\n", sources, conns, elapsed.Seconds())
	var codes []string
	statuses.Range(func(k, v any) bool {
		codes = append(codes, fmt.Sprintf("%d: %d", k, v.(*atomic.Uint64).Load()))
		return true
	})
	sort.Strings(codes)
	fmt.Printf("flood answers: %s\n", strings.Join(codes, ", "))
	for _, reason := range []string{"signature", "failure_budget", "unknown_key"} {
		fmt.Printf("denied %s: %.0f/s\n", reason, (after[reason]-before[reason])/elapsed.Seconds())
	}
	fmt.Printf("valid client alone:       p50 %v p99 %v (%d requests)\n", pct(aloneLat, 50), pct(aloneLat, 99), len(aloneLat))
	fmt.Printf("valid client during flood: p50 %v p99 %v (%d requests)\n", pct(floodLat, 50), pct(floodLat, 99), len(floodLat))
	return nil
}

// client is an HTTP client whose connections come from the source address src.
func client(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: d.DialContext, MaxIdleConnsPerHost: 1}, Timeout: 30 * time.Second}
}

func get(c *http.Client, url, token string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// measure sends the valid token one request after another for d and returns the latencies.
func measure(c *http.Client, url, token string, d time.Duration) ([]time.Duration, error) {
	var lat []time.Duration
	for end := time.Now().Add(d); time.Now().Before(end); {
		t0 := time.Now()
		code, err := get(c, url, token)
		if err != nil || code != http.StatusOK {
			return nil, fmt.Errorf("valid client: status %d, %v", code, err)
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}

func pct(lat []time.Duration, p int) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), lat...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)*p/100].Round(10 * time.Microsecond)
}

// readMetrics returns the denied counts of nutsgate_auth_decisions_total by reason.
func readMetrics(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, "nutsgate_auth_decisions_total{") || !strings.Contains(line, `result="denied"`) {
			continue
		}
		i := strings.Index(line, `reason="`)
		j := strings.LastIndexByte(line, ' ')
		if i < 0 || j < 0 {
			continue
		}
		reason := line[i+len(`reason="`):]
		reason = reason[:strings.IndexByte(reason, '"')]
		v, err := strconv.ParseFloat(line[j+1:], 64)
		if err == nil {
			out[reason] = v
		}
	}
	return out, nil
}
