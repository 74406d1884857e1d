// Package matrix holds what every Matrix HTTP front door shares: the standard error
// codes and their JSON form, JSON responses, and request body decoding with the spec's
// error semantics.
package matrix

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
)

// Standard error codes of the client-server API.
const (
	CodeUnknown                = "M_UNKNOWN"
	CodeUnrecognized           = "M_UNRECOGNIZED"
	CodeForbidden              = "M_FORBIDDEN"
	CodeNotJSON                = "M_NOT_JSON"
	CodeBadJSON                = "M_BAD_JSON"
	CodeTooLarge               = "M_TOO_LARGE"
	CodeMissingToken           = "M_MISSING_TOKEN"
	CodeUnknownToken           = "M_UNKNOWN_TOKEN"
	CodeUserInUse              = "M_USER_IN_USE"
	CodeInvalidUsername        = "M_INVALID_USERNAME"
	CodeGuestAccessForbidden   = "M_GUEST_ACCESS_FORBIDDEN"
	CodeNotFound               = "M_NOT_FOUND"
	CodeBadAlias               = "M_BAD_ALIAS"
	CodeLimitExceeded          = "M_LIMIT_EXCEEDED"
	CodeMissingParam           = "M_MISSING_PARAM"
	CodeInvalidParam           = "M_INVALID_PARAM"
	CodeRoomInUse              = "M_ROOM_IN_USE"
	CodeUnsupportedRoomVersion = "M_UNSUPPORTED_ROOM_VERSION"
	CodeExclusive              = "M_EXCLUSIVE"
	// The errors of the application service ping.
	CodeURLNotSet         = "M_URL_NOT_SET"
	CodeBadStatus         = "M_BAD_STATUS"
	CodeConnectionFailed  = "M_CONNECTION_FAILED"
	CodeConnectionTimeout = "M_CONNECTION_TIMEOUT"
)

// Error is a Matrix error: an HTTP status and the {"errcode", "error"} body.
type Error struct {
	Status  int
	Code    string
	Message string
	// Extra holds further top-level fields of the body, e.g. retry_after_ms or
	// soft_logout. It never overrides errcode or error.
	Extra map[string]any
}

// Errorf builds an Error with a formatted message.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// With returns a copy of e with one more body field, leaving e untouched so shared error
// values stay shared.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extra = maps.Clone(e.Extra)
	if c.Extra == nil {
		c.Extra = map[string]any{}
	}
	c.Extra[key] = value
	return &c
}

// MarshalJSON writes the error body.
func (e *Error) MarshalJSON() ([]byte, error) {
	body := make(map[string]any, len(e.Extra)+2)
	maps.Copy(body, e.Extra)
	body["errcode"] = e.Code
	body["error"] = e.Message
	return Marshal(body)
}

// WriteError answers with err: an *Error (also wrapped) as itself, anything else as a 500
// M_UNKNOWN whose message reveals nothing of the internal failure; callers log the cause.
func WriteError(w http.ResponseWriter, err error) {
	var me *Error
	if !errors.As(err, &me) {
		me = Errorf(http.StatusInternalServerError, CodeUnknown, "Internal server error")
	}
	WriteJSON(w, me.Status, me)
}
