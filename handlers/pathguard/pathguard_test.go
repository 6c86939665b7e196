package pathguard

import (
	"errors"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		target string
		want   error
	}{
		// Passes.
		{"/", nil},
		{"/n2n/transactions", nil},
		{"/n2n/", nil},
		{"/n2n/x?a=%2f&b=..//\\", nil}, // the query is not checked
		{"/n2n?", nil},
		{"/iam/did:web:example.com%3A8443/x", nil},
		{"/iam/did:web:example.com%3a8443/did.json", nil},
		{"/iam/did:web:example.com%253A8443/x", nil},        // an encoded did:web, encoded once more
		{"/iam/x%3B%3d%40%24%26%2B%2c%21%27%28%29%2A", nil}, // reserved sub-delims and gen-delims
		{"/iam/%20%22%3C%3e%5B%5d%5E%60%7B%7c%7D%7F%80%FF", nil},
		{"/iam/%2F%2f", ErrEncodedSlash},
		{"/iam/a%40b/c%20d", nil},
		{"/N2N", nil},
		{"/n2n;a=b/x", nil},
		{"/n2n/x;a=b", nil},
		{"/n2n/...", nil},
		{"/n2n/.x/x.", nil},
		{"/n2n/..x", nil},
		{"/n2n/x#/y", nil},
		{"/iam/%253A%2520", nil}, // %25 hiding a reserved byte
		{"/%25", nil},
		{"/%2525", nil},
		{"/%25zz", nil},
		{"/%25%32", ErrEncodedUnreserved}, // %32 is the digit 2
		{"/%25252525252e", nil},           // deeper than MaxDecodeDepth
		{"http://example.com/n2n/x?y", nil},
		{"HTTPS://example.com:443/iam/x", nil},
		{"http://example.com", nil},
		{"http://example.com?/../x", nil},

		// Encoded separators and dots, any case.
		{"/n2n/%2e%2e/internal", ErrEncodedDot},
		{"/n2n/%2E%2E/internal", ErrEncodedDot},
		{"/n2n/.%2e/internal", ErrEncodedDot},
		{"/n2n/..%2finternal", ErrEncodedSlash},
		{"/internal%2F..", ErrEncodedSlash},
		{"/n2n/%5c", ErrEncodedBackslash},
		{"/n2n/%5C..%5Cinternal", ErrEncodedBackslash},
		{"/n2n/x%2ejson", ErrEncodedDot},

		// Backslash, NUL.
		{"/n2n\\x", ErrBackslash},
		{"/n2n/..\\internal", ErrBackslash},
		{"/n2n/%00", ErrNUL},
		{"/n2n/x\x00", ErrNUL},

		// Dot and empty segments.
		{"/n2n//x", ErrEmptySegment},
		{"//n2n", ErrEmptySegment},
		{"/n2n//", ErrEmptySegment},
		{"/n2n/;x/y", ErrEmptySegment},
		{"/n2n/;x", ErrEmptySegment},
		{"/n2n/./x", ErrDotSegment},
		{"/n2n/x/.", ErrDotSegment},
		{"/n2n/x/..", ErrDotSegment},
		{"/.", ErrDotSegment},
		{"/..", ErrDotSegment},
		{"/../internal", ErrDotSegment},
		{"/n2n/..;/internal", ErrDotSegment},
		{"/n2n/..;x=y/internal", ErrDotSegment},
		{"/n2n/.;x/internal", ErrDotSegment},
		{"/n2n/..%3b/internal", ErrDotSegment},
		{"/n2n/..%3Bx/internal", ErrDotSegment},
		{"/n2n;x/..", ErrDotSegment},

		// Encoded more than once.
		{"/n2n/%252e%252e/internal", ErrNestedEncoding},
		{"/n2n/%252E", ErrNestedEncoding},
		{"/n2n/..%252finternal", ErrNestedEncoding},
		{"/n2n/%255c", ErrNestedEncoding},
		{"/n2n/%2500", ErrNestedEncoding},
		{"/n2n/%25%32%65", ErrEncodedUnreserved}, // %32, %65 already
		{"/n2n/%25%32%46", ErrEncodedUnreserved},
		{"/n2n/%25252e", ErrNestedEncoding},
		{"/n2n/%252525252e", ErrNestedEncoding}, // depth 5
		{"/n2n/%25c0%25ae", ErrNestedEncoding},

		// Encoded unreserved characters (ALPHA DIGIT - . _ ~), any case, any
		// depth: routing decodes them, the node may not.
		{"/%69nternal/x", ErrEncodedUnreserved},
		{"/%49NTERNAL/x", ErrEncodedUnreserved},
		{"/n2n/%61", ErrEncodedUnreserved},
		{"/iam/%41", ErrEncodedUnreserved},
		{"/iam/%5A%5a%7A%7a%30%39", ErrEncodedUnreserved},
		{"/iam/%5a", ErrEncodedUnreserved},
		{"/iam/%30", ErrEncodedUnreserved},
		{"/iam/%39", ErrEncodedUnreserved},
		{"/iam/x%2dy", ErrEncodedUnreserved},
		{"/iam/x%2Dy", ErrEncodedUnreserved},
		{"/iam/x%5fy", ErrEncodedUnreserved},
		{"/iam/x%5Fy", ErrEncodedUnreserved},
		{"/iam/x%7ey", ErrEncodedUnreserved},
		{"/iam/x%7Ey", ErrEncodedUnreserved},
		{"/iam/%3A%6e", ErrEncodedUnreserved},
		{"/%2569nternal/x", ErrNestedEncoding},
		{"/n2n/%2561", ErrNestedEncoding},
		{"/n2n/%257E", ErrNestedEncoding},
		{"/n2n/%25252541", ErrNestedEncoding}, // depth 4
		{"http://example.com/%69nternal/x", ErrEncodedUnreserved},

		// Overlong UTF-8 and malformed escapes.
		{"/n2n/%c0%ae%c0%ae/internal", ErrOverlong},
		{"/n2n/%C1%9C", ErrOverlong},
		{"/n2n/%zz", ErrMalformedEscape},
		{"/n2n/%2", ErrMalformedEscape},
		{"/n2n/%", ErrMalformedEscape},
		{"/n2n/%u002e", ErrMalformedEscape},

		// Request targets.
		{"*", ErrAsterisk},
		{"", ErrNotPath},
		{"example.com:443", ErrNotPath},
		{"n2n/x", ErrNotPath},
		{"ftp://example.com/x", ErrNotPath},
		{"x:/n2n/../internal", ErrNotPath},
		{"http:/n2n", ErrNotPath},
		{"http://example.com/n2n/%2e%2e/internal", ErrEncodedDot},
		{"http://example.com//internal", ErrEmptySegment},
		{"https://example.com/n2n/../internal?x", ErrDotSegment},
	} {
		if got := Check(tc.target); !errors.Is(got, tc.want) {
			t.Errorf("Check(%q) = %v, want %v", tc.target, got, tc.want)
		}
	}
}

func TestCheckPathNeedsSlash(t *testing.T) {
	if err := CheckPath("n2n"); !errors.Is(err, ErrNotPath) {
		t.Fatalf("CheckPath(n2n) = %v", err)
	}
	if err := CheckPath(""); err != nil {
		t.Fatalf("CheckPath() = %v", err)
	}
}

func TestErrorsAreLowercase(t *testing.T) {
	for _, err := range []error{ErrNotPath, ErrAsterisk, ErrMalformedEscape, ErrEncodedSlash, ErrEncodedBackslash, ErrEncodedDot, ErrBackslash, ErrNUL, ErrOverlong, ErrDotSegment, ErrEmptySegment, ErrNestedEncoding, ErrEncodedUnreserved} {
		if m := err.Error(); m == "" || m[0] < 'a' || m[0] > 'z' {
			t.Errorf("error %q", m)
		}
	}
}
