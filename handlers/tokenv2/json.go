package tokenv2

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// maxJSONDepth bounds the nesting of a token's header and claims.
const maxJSONDepth = 32

// parseObject decodes a token's header or claims strictly, so that no other
// JSON parser can read them differently: valid UTF-8, one JSON object, no
// duplicate member name at any depth, nothing after the object but white
// space. It returns the object's members undecoded.
func parseObject(data []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("not JSON: %v", err)
	}
	if tok != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	if err := checkObject(dec, 1); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(data, &members); err != nil {
		return nil, fmt.Errorf("not JSON: %v", err)
	}
	return members, nil
}

// checkObject reads the members of an object whose '{' was just read.
func checkObject(dec *json.Decoder, depth int) error {
	seen := make(map[string]struct{})
	for {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("not JSON: %v", err)
		}
		if tok == json.Delim('}') {
			return nil
		}
		name := tok.(string) // the decoder only yields strings as member names
		if _, dup := seen[name]; dup {
			return fmt.Errorf("duplicate member %q", name)
		}
		seen[name] = struct{}{}
		if err := checkValue(dec, depth); err != nil {
			return err
		}
	}
}

// checkValue reads one value, descending into objects and arrays.
func checkValue(dec *json.Decoder, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("not JSON: %v", err)
	}
	switch tok {
	case json.Delim('{'), json.Delim('['):
		if depth >= maxJSONDepth {
			return errors.New("JSON nested too deeply")
		}
	default:
		return nil
	}
	if tok == json.Delim('{') {
		return checkObject(dec, depth+1)
	}
	for dec.More() {
		if err := checkValue(dec, depth+1); err != nil {
			return err
		}
	}
	_, err = dec.Token() // ']'
	return err
}

// Dates outside years 1 to 9999 are refused as absurd.
var (
	minDate = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	maxDate = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC).Unix()
)

// parseDate reads a NumericDate claim as the node does: a JSON number
// (fraction dropped, exponent allowed), a string of digits with an optional
// fraction (dropped too: "1700000000.5" is 1700000000), or an RFC 3339
// string. It returns whole seconds since the Unix epoch.
func parseDate(raw json.RawMessage) (int64, error) {
	var secs int64
	switch {
	case len(raw) > 0 && raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		whole, frac, hasFrac := strings.Cut(s, ".")
		if isDigits(whole) && (!hasFrac || frac == "" || isDigits(frac)) {
			n, err := strconv.ParseInt(whole, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%q is out of range", s)
			}
			secs = n
		} else if t, err := time.Parse(time.RFC3339, s); err == nil {
			secs = t.Unix()
		} else {
			return 0, fmt.Errorf("%q is not a date", s)
		}
	case len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9'):
		f, _, err := big.ParseFloat(string(raw), 10, 128, big.ToZero)
		if err != nil {
			return 0, fmt.Errorf("%s is not a date: %v", raw, err)
		}
		if f.IsInf() {
			return 0, fmt.Errorf("%s is out of range", raw)
		}
		i, _ := f.Int(nil) // truncates toward zero: the fraction is dropped
		if !i.IsInt64() {
			return 0, fmt.Errorf("%s is out of range", raw)
		}
		secs = i.Int64()
	default:
		return 0, fmt.Errorf("%s is not a date", raw)
	}
	if secs < minDate || secs > maxDate {
		return 0, fmt.Errorf("%d is out of range", secs)
	}
	return secs, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
