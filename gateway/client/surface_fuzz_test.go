package client

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/schemas"
)

// The parsers of issue 10's endpoints: tokens and URLs from clients never panic, and
// what they accept is what they should.

func FuzzPreviewURL(f *testing.F) {
	for _, s := range []string{"http://example.org/a#b", "https://[::1]:8/x", "file:///etc/passwd", "http://", "%zz", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := parsePreviewURL(raw)
		if err != nil {
			return
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
			t.Fatalf("accepted %q as %v", raw, u)
		}
	})
}

func FuzzSearchNextBatch(f *testing.F) {
	for _, s := range []string{"o10", "o-1", "t5_2", "s7_1_2", "o", "x", ""} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, tok string, recent bool) {
		q := persist.SearchQuery{Recent: recent}
		if err := continueSearch(&q, tok); err != nil {
			return
		}
		if q.Offset < 0 || recent && q.Before == nil || !recent && q.Before != nil {
			t.Fatalf("%q (recent %v) gave %+v", tok, recent, q)
		}
	})
}

func FuzzOffsetToken(f *testing.F) {
	for _, s := range []string{"p0", "p12", "p-3", "p", "q1", "p1e3", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		if n, ok := parseOffsetToken(tok, "p"); ok && n < 0 {
			t.Fatalf("%q gave %d", tok, n)
		}
	})
}

func FuzzReportBody(f *testing.F) {
	for _, s := range []string{`{"reason":"spam","score":-100}`, `{"score":1}`, `{"score":-0.5}`, `{"reason":"a\u0000b"}`, `{}`, `[]`, `{"reason":7}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest(http.MethodPost, "/_matrix/client/v3/rooms/!r:h/report/$e", strings.NewReader(body))
		r.SetPathValue("room", "!r:h")
		rep, _, err := readReport(r)
		if err != nil {
			return
		}
		if !schemas.StorableText(rep.Reason) || rep.Score != nil && (*rep.Score < minReportScore || *rep.Score > maxReportScore) {
			t.Fatalf("%q gave %+v", body, rep)
		}
	})
}
