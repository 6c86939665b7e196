package pki

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// maxRedirects bounds the redirects a fetch follows.
const maxRedirects = 3

// IsURL reports whether source is fetched over HTTP(S); any other source is
// a file path (or a file: URL).
func IsURL(source string) bool {
	return hasPrefixFold(source, "http://") || hasPrefixFold(source, "https://")
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// newHTTPClient returns the client of fetches: the environment's proxy
// settings, redirects only to HTTP(S) and at most maxRedirects of them.
func newHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to %s: not HTTP(S)", req.URL.Redacted())
			}
			return nil
		},
	}
}

// fetch reads source, at most max bytes: an HTTP(S) URL must answer 200 in
// whole within ctx; a file is read from disk.
func (c *Checker) fetch(ctx context.Context, source string, max int64) ([]byte, error) {
	if !IsURL(source) {
		return readFile(filePath(source), max)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, source, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL is named by the caller
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("answered %s", resp.Status)
	}
	return readAtMost(resp.Body, max)
}

// filePath is the path of a file source, written as a path or a file: URL.
func filePath(source string) string {
	if u, err := url.Parse(source); err == nil && u.Scheme == "file" {
		return u.Path
	}
	return source
}

func readFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAtMost(f, max)
}

// readAtMost reads r to its end, failing once it has more than max bytes.
func readAtMost(r io.Reader, max int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return data, nil
}
