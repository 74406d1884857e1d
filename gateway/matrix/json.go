package matrix

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"sync/atomic"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/ganglionhq/ganglion/schemas"
)

// DefaultMaxJSONDepth bounds how deeply the arrays and objects of a request's JSON may
// nest unless SetMaxJSONDepth says otherwise. Real events nest a few levels; a deeper
// document would be stored and served back on every read, and costs every decoder that
// ever meets it.
const DefaultMaxJSONDepth = 100

// maxJSONDepth is the process's bound (max_json_depth), set once at start.
var maxJSONDepth atomic.Int64

func init() { maxJSONDepth.Store(DefaultMaxJSONDepth) }

// SetMaxJSONDepth sets how deeply request JSON may nest, for the whole process.
func SetMaxJSONDepth(n int) { maxJSONDepth.Store(int64(n)) }

// DefaultBodyLimit is the request body limit of JSON endpoints: the spec's 65536-byte
// bound on events, which no other client request legitimately approaches.
const DefaultBodyLimit int64 = 65536

// Marshal encodes JSON without HTML escaping (schemas.Marshal); every answer is made
// by it.
var Marshal = schemas.Marshal

// WriteJSON answers with status and v as JSON, made by Marshal.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// DecodeBody reads a JSON object of at most limit bytes from r into dst. Its errors are
// *Error with the spec's codes: 413 M_TOO_LARGE over the limit; 400 M_NOT_JSON when the
// body is empty, not UTF-8 or not JSON; 400 M_BAD_JSON when it is JSON but not an object
// or does not fit dst's types (Synapse answers both of those with M_BAD_JSON too).
func DecodeBody(r *http.Request, limit int64, dst any) error {
	body, err := readBody(r, limit)
	if err != nil {
		return err
	}
	return decodeJSON(body, limit, dst)
}

// DecodeOptionalBody is DecodeBody for endpoints whose body may be left out (Synapse
// reads none as {}): an empty body leaves dst as it is.
func DecodeOptionalBody(r *http.Request, limit int64, dst any) error {
	body, err := readBody(r, limit)
	if err != nil || len(bytes.TrimLeft(body, " \t\r\n")) == 0 {
		return err
	}
	return decodeJSON(body, limit, dst)
}

func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, Errorf(http.StatusBadRequest, CodeUnknown, "Could not read the request body")
	}
	return body, nil
}

func tooLarge(limit int64) *Error {
	return Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "Request body is larger than %d bytes", limit)
}

func decodeJSON(body []byte, limit int64, dst any) error {
	if int64(len(body)) > limit {
		return tooLarge(limit)
	}
	if err := CheckJSON(body); err != nil {
		return err
	}
	if trimmed := bytes.TrimLeft(body, " \t\r\n"); trimmed[0] != '{' {
		return Errorf(http.StatusBadRequest, CodeBadJSON, "Content must be a JSON object")
	}
	if err := json.Unmarshal(body, dst); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return Errorf(http.StatusBadRequest, CodeBadJSON, "Invalid value for field %q: expected a JSON %s", typeErr.Field, jsonTypeName(typeErr.Type))
		}
		return Errorf(http.StatusBadRequest, CodeBadJSON, "Content does not match the expected JSON shape")
	}
	return nil
}

// CheckJSON accepts JSON a client may send: valid UTF-8 and valid JSON (else 400
// M_NOT_JSON), nested at most max_json_depth levels, and without what encoding/json would
// accept but change or Postgres cannot store (400 M_BAD_JSON): the escape \u0000 (no
// TEXT or jsonb column holds NUL) and a UTF-16 surrogate that is not part of a pair
// (encoding/json silently replaces it with U+FFFD). Every request body and every JSON
// query parameter passes through it, so nothing decoded later needs these checks.
func CheckJSON(b []byte) error {
	// encoding/json would silently replace invalid UTF-8 with U+FFFD.
	if !utf8.Valid(b) || !json.Valid(b) {
		return Errorf(http.StatusBadRequest, CodeNotJSON, "Content is not valid JSON")
	}
	// b is valid JSON from here on: every string is closed and every \u has four hex
	// digits, so one pass needs no bounds checks beyond the surrogate pair's lookahead.
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '{', '[':
			if depth++; int64(depth) > maxJSONDepth.Load() {
				return Errorf(http.StatusBadRequest, CodeBadJSON, "JSON nests deeper than %d levels", maxJSONDepth.Load())
			}
		case '}', ']':
			depth--
		case '"':
			end, err := checkJSONString(b, i+1)
			if err != nil {
				return err
			}
			i = end
		}
	}
	return nil
}

// checkJSONString scans the string of valid JSON b that starts at i (after its opening
// quote) and returns the index of its closing quote.
func checkJSONString(b []byte, i int) (int, error) {
	for ; b[i] != '"'; i++ {
		if b[i] != '\\' {
			continue
		}
		i++
		if b[i] != 'u' {
			continue
		}
		r := hexRune(b[i+1 : i+5])
		i += 4
		switch {
		case r == 0:
			return 0, Errorf(http.StatusBadRequest, CodeBadJSON, "Strings may not contain \\u0000")
		case !utf16.IsSurrogate(r):
		case r < 0xdc00 && i+6 < len(b) && b[i+1] == '\\' && b[i+2] == 'u' && isLowSurrogate(hexRune(b[i+3:i+7])):
			i += 6 // a high surrogate followed by a low one: one character
		default:
			return 0, Errorf(http.StatusBadRequest, CodeBadJSON, "Strings may not contain a lone UTF-16 surrogate (\\u%s)", b[i-3:i+1])
		}
	}
	return i, nil
}

// hexRune reads the four hex digits of a \u escape.
func hexRune(digits []byte) rune {
	n, _ := strconv.ParseUint(string(digits), 16, 32) // valid JSON: always four hex digits
	return rune(n)
}

func isLowSurrogate(r rune) bool { return r >= 0xdc00 && r < 0xe000 }

// jsonTypeName names the JSON type a Go type decodes from, for error messages.
func jsonTypeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "string" // []byte travels as base64
		}
		return "array"
	case reflect.Array:
		return "array"
	default:
		return "object"
	}
}
