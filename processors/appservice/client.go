package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// RequestTimeout bounds one request to a service, as Synapse's 60 seconds does for
// transactions; queries and pings take a shorter one.
const (
	RequestTimeout = 60 * time.Second
	queryTimeout   = 10 * time.Second
	// maxAnswer bounds what is read of a service's answer.
	maxAnswer = 64 << 10
)

// StatusError is a service's answer other than 2xx.
type StatusError struct {
	Status int
	Body   string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("appservice: the service answered %d", e.Status)
}

// call makes one request to the service's url + path with its hs_token and the JSON
// body (none when nil), and returns the answer's body when it is 2xx; a *StatusError
// otherwise.
func call(ctx context.Context, client *http.Client, svc *Service, method, path string, body []byte) ([]byte, error) {
	if svc.URL == "" {
		return nil, ErrNoURL
	}
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(svc.URL, "/")+path, reader)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+svc.ServerToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(res.Body, maxAnswer))
	if err != nil {
		return nil, err
	}
	if res.StatusCode/100 != 2 {
		return nil, &StatusError{Status: res.StatusCode, Body: string(answer)}
	}
	return answer, nil
}

// QueryUser asks the service whether userID exists (GET /_matrix/app/v1/users/{userId}):
// a service answering 200 has created it. A 404 is false with no error.
func QueryUser(ctx context.Context, client *http.Client, svc *Service, userID string) (bool, error) {
	return query(ctx, client, svc, "/_matrix/app/v1/users/"+url.PathEscape(userID))
}

// QueryAlias asks the service whether alias exists (GET /_matrix/app/v1/rooms/{alias}):
// a service answering 200 has created the room and the alias.
func QueryAlias(ctx context.Context, client *http.Client, svc *Service, alias string) (bool, error) {
	return query(ctx, client, svc, "/_matrix/app/v1/rooms/"+url.PathEscape(alias))
}

func query(ctx context.Context, client *http.Client, svc *Service, path string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	_, err := call(ctx, client, svc, http.MethodGet, path, nil)
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusNotFound {
		return false, nil
	}
	return err == nil, err
}

// Ping calls the service's POST /_matrix/app/v1/ping with txnID (may be empty) and
// returns how long it took to answer 200.
func Ping(ctx context.Context, client *http.Client, svc *Service, txnID string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	fields := map[string]string{}
	if txnID != "" {
		fields["transaction_id"] = txnID
	}
	body, err := json.Marshal(fields)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	_, err = call(ctx, client, svc, http.MethodPost, "/_matrix/app/v1/ping", body)
	return time.Since(start), err
}
