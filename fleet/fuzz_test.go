package fleet

import (
	"testing"

	"github.com/nutsgate/nutsgate/mtlsident"
)

// FuzzParseRecords feeds the reading of the shared deny list what a hostile
// Redis could hold: any field names and values. It must never panic, and
// every record it keeps must be an entry whose key is its field.
func FuzzParseRecords(f *testing.F) {
	e, _ := mtlsident.ParseEntry("CN=node-a,O=Example")
	f.Add(e.Key(), "1796002012133239 + CN=node-a,O=Example")
	f.Add(e.Key(), "5 - cn=NODE-A, o=example")
	f.Add("sha256:"+string(make([]byte, 64)), "0 + sha256:00")
	f.Add("", "")
	f.Add("x", "99999999999999999999 + CN=x")
	f.Fuzz(func(t *testing.T, field, value string) {
		recs, bad := parseRecords([]any{field, value, 7, value}, 1<<52)
		if bad < 1 { // the pair keyed by a number is never kept
			t.Fatalf("bad %d", bad)
		}
		for k, r := range recs {
			got, err := mtlsident.ParseEntry(r.Text)
			if err != nil || got.Key() != k || r.Version < 0 || r.Version > 1<<52 {
				t.Fatalf("kept %q -> %+v (%v)", k, r, err)
			}
		}
	})
}
