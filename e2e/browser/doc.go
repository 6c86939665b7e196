// Package browser holds nutsgate's end-to-end tests in a real browser.
//
// The tests build the real binary from ./cmd/nutsgate once (TestMain), start
// it with `nutsgate run` on 127.0.0.1 in front of the in-process stand-in node
// (internal/testnode), serve web pages from other 127.0.0.1 origins, and drive
// headless Chromium with chromedp to load them: CHROME_PATH if set, else the
// first of chromium, chromium-browser, google-chrome, google-chrome-stable on
// PATH.
// They judge the gateway by what a browser actually does: what page scripts
// can read, what they are refused, and what reached the node.
//
// The tests need Chromium (or Chrome) and fail, never skip, without it. On
// Debian:
//
//	apt-get install -y chromium
//
// Run them with `go test ./e2e/browser/ -count=1 -v`.
package browser
