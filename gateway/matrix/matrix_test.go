package matrix

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestErrorJSON(t *testing.T) {
	e := Errorf(http.StatusTooManyRequests, CodeLimitExceeded, "slow down %s", "please")
	with := e.With("retry_after_ms", 1500).With("errcode", "M_HIJACK")
	if e.Extra != nil {
		t.Fatalf("With modified the original: %v", e.Extra)
	}
	b, err := json.Marshal(with)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"errcode": "M_LIMIT_EXCEEDED", "error": "slow down please", "retry_after_ms": float64(1500)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("body = %s, want %v", b, want)
	}
	if e.Error() != "M_LIMIT_EXCEEDED: slow down please" {
		t.Fatalf("Error() = %q", e.Error())
	}
}

func TestWriteError(t *testing.T) {
	for _, tc := range []struct {
		err        error
		status     int
		code, body string
	}{
		{Errorf(http.StatusForbidden, CodeForbidden, "no"), 403, CodeForbidden, `{"errcode":"M_FORBIDDEN","error":"no"}`},
		{fmt.Errorf("wrapped: %w", Errorf(http.StatusNotFound, CodeNotFound, "gone")), 404, CodeNotFound, `{"errcode":"M_NOT_FOUND","error":"gone"}`},
		{errors.New("pq: password authentication failed for secret"), 500, CodeUnknown, `{"errcode":"M_UNKNOWN","error":"Internal server error"}`},
	} {
		rec := httptest.NewRecorder()
		WriteError(rec, tc.err)
		if rec.Code != tc.status || strings.TrimSpace(rec.Body.String()) != tc.body {
			t.Errorf("WriteError(%v) = %d %s, want %d %s", tc.err, rec.Code, rec.Body, tc.status, tc.body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
	}
}

func TestWriteJSONKeepsCharacters(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteJSON(rec, http.StatusOK, map[string]string{"body": "<b>&</b>"})
	if got := strings.TrimSpace(rec.Body.String()); got != `{"body":"<b>&</b>"}` {
		t.Fatalf("body = %s", got)
	}
	rec = httptest.NewRecorder()
	WriteJSON(rec, http.StatusOK, map[string]any{"f": func() {}})
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), CodeUnknown) {
		t.Fatalf("unencodable value: %d %s", rec.Code, rec.Body)
	}
}

type sample struct {
	Name  string            `json:"name"`
	Count int               `json:"count"`
	Flag  bool              `json:"flag"`
	Tags  []string          `json:"tags"`
	Inner struct{ N *int }  `json:"inner"`
	Extra map[string]string `json:"extra"`
}

func decode(body string, limit int64) (sample, error) {
	var s sample
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	return s, DecodeBody(r, limit, &s)
}

func TestDecodeBody(t *testing.T) {
	for _, tc := range []struct {
		body   string
		limit  int64
		status int
		code   string
	}{
		{`{"name":"a","count":3,"tags":["x"]}`, 100, 0, ""},
		{` {"name":"a"} `, 100, 0, ""},
		{`{}`, 2, 0, ""},
		{`{"name":"ab"}`, 12, 413, CodeTooLarge},
		{``, 100, 400, CodeNotJSON},
		{`   `, 100, 400, CodeNotJSON},
		{`{"name":`, 100, 400, CodeNotJSON},
		{`{"name":"a"} trailing`, 100, 400, CodeNotJSON},
		{`{"name":"a"}{}`, 100, 400, CodeNotJSON},
		{`{'name':'a'}`, 100, 400, CodeNotJSON},
		{"{\"name\":\"\xff\"}", 100, 400, CodeNotJSON},
		{`{"count":NaN}`, 100, 400, CodeNotJSON},
		{`[]`, 100, 400, CodeBadJSON},
		{`null`, 100, 400, CodeBadJSON},
		{`"a"`, 100, 400, CodeBadJSON},
		{`{"name":1}`, 100, 400, CodeBadJSON},
		{`{"count":"3"}`, 100, 400, CodeBadJSON},
		{`{"count":1.5}`, 100, 400, CodeBadJSON},
		{`{"count":1e400}`, 100, 400, CodeBadJSON},
		{`{"tags":"x"}`, 100, 400, CodeBadJSON},
		{`{"inner":{"N":true}}`, 100, 400, CodeBadJSON},
		{`{"extra":{"k":[]}}`, 100, 400, CodeBadJSON},
		// What encoding/json accepts but would change, or Postgres cannot store.
		{`{"name":"sur\ud800x"}`, 100, 400, CodeBadJSON},
		{`{"name":"\udc00"}`, 100, 400, CodeBadJSON},
		{`{"name":"\ud800\u0041"}`, 100, 400, CodeBadJSON},
		{`{"name":"\ud800"}`, 100, 400, CodeBadJSON},
		{`{"\ud800":1}`, 100, 400, CodeBadJSON},
		{`{"name":"\ud83d\ude00 \u00e9 \\ud800"}`, 100, 0, ""},
		{`{"name":"a\u0000b"}`, 100, 400, CodeBadJSON},
		{`{"extra":{"k\u0000":"v"}}`, 100, 400, CodeBadJSON},
		{`{"name":"\\u0000"}`, 100, 0, ""},
		{`{"name":"[[[[{"}`, 100, 0, ""},
	} {
		_, err := decode(tc.body, tc.limit)
		if tc.status == 0 {
			if err != nil {
				t.Errorf("%q: %v", tc.body, err)
			}
			continue
		}
		var me *Error
		if !errors.As(err, &me) || me.Status != tc.status || me.Code != tc.code {
			t.Errorf("%q (limit %d): err = %v, want %d %s", tc.body, tc.limit, err, tc.status, tc.code)
		}
	}
	s, err := decode(`{"name":"a","count":3,"flag":true,"tags":["x","y"],"inner":{"N":7},"unknown":1}`, 1000)
	if err != nil || s.Name != "a" || s.Count != 3 || !s.Flag || len(s.Tags) != 2 || *s.Inner.N != 7 {
		t.Fatalf("decoded %+v, %v", s, err)
	}
	_, err = decode(`{"inner":{"N":"x"}}`, 100)
	if !strings.Contains(err.Error(), `"inner.N"`) || !strings.Contains(err.Error(), "number") {
		t.Fatalf("type error does not name the field and type: %v", err)
	}
}

// Nesting is bounded at DefaultMaxJSONDepth levels, the body object counting as one; brackets
// inside strings do not count.
func TestDecodeBodyDepth(t *testing.T) {
	nested := func(levels int) string {
		return `{"extra":` + strings.Repeat("[", levels-1) + strings.Repeat("]", levels-1) + `}`
	}
	if _, err := decode(nested(DefaultMaxJSONDepth), 1<<20); err == nil || !strings.Contains(err.Error(), "expected") {
		// The body is within the bound; it fails only on its shape (extra wants an object).
		t.Fatalf("%d levels: %v, want a shape error", DefaultMaxJSONDepth, err)
	}
	for _, levels := range []int{DefaultMaxJSONDepth + 1, 9990} {
		_, err := decode(nested(levels), 1<<20)
		var me *Error
		if !errors.As(err, &me) || me.Status != 400 || me.Code != CodeBadJSON || !strings.Contains(me.Message, "nests deeper") {
			t.Errorf("%d levels: err = %v, want 400 M_BAD_JSON for the depth", levels, err)
		}
	}
	// max_json_depth moves the bound (this test is not parallel, so no other sees it).
	SetMaxJSONDepth(5)
	_, shallowErr := decode(nested(6), 1<<20)
	SetMaxJSONDepth(DefaultMaxJSONDepth)
	if shallowErr == nil || !strings.Contains(shallowErr.Error(), "deeper than 5") {
		t.Errorf("6 levels with max_json_depth 5: %v", shallowErr)
	}
	var v map[string]any
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"a":"`+strings.Repeat("[", 500)+`"}`))
	if err := DecodeBody(r, 1<<20, &v); err != nil {
		t.Fatalf("brackets in a string: %v", err)
	}
}

// A request that declares a large body is refused before it is read.
func TestDecodeBodyContentLength(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{}`))
	r.ContentLength = 1 << 20
	var s sample
	var me *Error
	if err := DecodeBody(r, 100, &s); !errors.As(err, &me) || me.Code != CodeTooLarge {
		t.Fatalf("err = %v", err)
	}
}

// acceptable walks a decoded JSON value at nesting level depth and says what in it
// DecodeBody should have refused: nesting past DefaultMaxJSONDepth, NUL, or U+FFFD the client
// did not send (the trace of a replaced lone surrogate).
func acceptable(v any, depth int, sentFFFD bool) string {
	str := func(s string) string {
		if strings.ContainsRune(s, 0) {
			return "a string holds NUL"
		}
		if !sentFFFD && strings.ContainsRune(s, '\ufffd') {
			return "a lone surrogate was replaced with U+FFFD"
		}
		return ""
	}
	switch v := v.(type) {
	case string:
		return str(v)
	case []any:
		if depth > DefaultMaxJSONDepth {
			return "nests deeper than DefaultMaxJSONDepth"
		}
		for _, e := range v {
			if err := acceptable(e, depth+1, sentFFFD); err != "" {
				return err
			}
		}
	case map[string]any:
		if depth > DefaultMaxJSONDepth {
			return "nests deeper than DefaultMaxJSONDepth"
		}
		for k, e := range v {
			if err := str(k); err != "" {
				return err
			}
			if err := acceptable(e, depth+1, sentFFFD); err != "" {
				return err
			}
		}
	}
	return ""
}

func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{`{}`, `{"name":"a","count":1,"tags":["x"],"inner":{"N":2}}`, `[]`, `{"count":"x"}`, `{`, "\xff", `{"extra":{"a":"b"}}`,
		`{"name":"\ud83d\ude00"}`, `{"name":"sur\ud800x"}`, `{"name":"\u0000"}`, `{"extra":{"a":"\\u0000"}}`, `{"tags":[[[[]]]]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		const limit = 256
		var s sample
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(string(body)))
		err := DecodeBody(r, limit, &s)
		if err == nil {
			var obj map[string]json.RawMessage
			if len(body) > limit || json.Unmarshal(body, &obj) != nil || obj == nil {
				t.Fatalf("accepted %q, which is not a JSON object within the limit", body)
			}
			var v any
			_ = json.Unmarshal(body, &v)
			// encoding/json turns a lone surrogate into U+FFFD: an accepted body decodes
			// to U+FFFD only where it wrote one itself.
			sentFFFD := bytes.ContainsRune(body, '\ufffd') || bytes.Contains(bytes.ToLower(body), []byte(`\ufffd`))
			if err := acceptable(v, 1, sentFFFD); err != "" {
				t.Fatalf("accepted %q: %s", body, err)
			}
			return
		}
		var me *Error
		if !errors.As(err, &me) {
			t.Fatalf("error %v is not a *matrix.Error", err)
		}
		switch {
		case len(body) > limit:
			if me.Code != CodeTooLarge || me.Status != 413 {
				t.Fatalf("%d bytes: %v, want M_TOO_LARGE", len(body), me)
			}
		case !json.Valid(body):
			if me.Code != CodeNotJSON || me.Status != 400 {
				t.Fatalf("%q: %v, want M_NOT_JSON", body, me)
			}
		default:
			if me.Status != 400 || (me.Code != CodeBadJSON && me.Code != CodeNotJSON) {
				t.Fatalf("%q: %v, want 400 M_BAD_JSON (or M_NOT_JSON for invalid UTF-8)", body, me)
			}
		}
	})
}
