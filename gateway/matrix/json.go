package matrix

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"unicode/utf8"
)

// DefaultBodyLimit is the request body limit of JSON endpoints: the spec's 65536-byte
// bound on events, which no other client request legitimately approaches.
const DefaultBodyLimit int64 = 65536

// WriteJSON answers with status and v as JSON. HTML escaping is off so event content
// goes out with the characters it came in with.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// DecodeBody reads a JSON object of at most limit bytes from r into dst. Its errors are
// *Error with the spec's codes: 413 M_TOO_LARGE over the limit; 400 M_NOT_JSON when the
// body is empty, not UTF-8 or not JSON; 400 M_BAD_JSON when it is JSON but not an object
// or does not fit dst's types (Synapse answers both of those with M_BAD_JSON too).
func DecodeBody(r *http.Request, limit int64, dst any) error {
	if r.ContentLength > limit {
		return tooLarge(limit)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return Errorf(http.StatusBadRequest, CodeUnknown, "Could not read the request body")
	}
	return decodeJSON(body, limit, dst)
}

func tooLarge(limit int64) *Error {
	return Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "Request body is larger than %d bytes", limit)
}

func decodeJSON(body []byte, limit int64, dst any) error {
	if int64(len(body)) > limit {
		return tooLarge(limit)
	}
	// encoding/json would silently replace invalid UTF-8 with U+FFFD.
	if !utf8.Valid(body) || !json.Valid(body) {
		return Errorf(http.StatusBadRequest, CodeNotJSON, "Content is not valid JSON")
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
