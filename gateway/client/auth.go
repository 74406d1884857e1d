package client

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/gateway/serve"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/processors/appservice"
)

// Device is the authenticated caller of a request. AppService is set when an
// application service makes it, as its sender or one of its users.
type Device struct {
	UserID, DeviceID string
	AppService       *appservice.Service
}

// authed wraps a handler that needs an access token, given as "Authorization: Bearer" or
// as the access_token query parameter.
func (s *Server) authed(h func(w http.ResponseWriter, r *http.Request, dev Device)) http.HandlerFunc {
	return s.authenticate(h, true)
}

// authedNoWait is authed without seeAnswered's wait, for two kinds of request: the
// event writes whose checks the room's writer makes from memory (send, state, redact),
// which need not see earlier events in Postgres, so a client sending one event after
// another never waits for their projection; and /sync, which waits for the device's
// own writes (awaitOwnWrite), and for seeAnswered only when it answers at once: a
// long-poll under a stream of other users' sends gets each of them as it becomes
// visible, without waiting for the latest projection before it starts.
func (s *Server) authedNoWait(h func(w http.ResponseWriter, r *http.Request, dev Device)) http.HandlerFunc {
	return s.authenticate(h, false)
}

func (s *Server) authenticate(h func(w http.ResponseWriter, r *http.Request, dev Device), seeAnswered bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, err := requestToken(r)
		if err != nil {
			matrix.WriteError(w, err)
			return
		}
		var dev Device
		if svc, ok := s.AppServices.ByToken(tok); ok {
			dev, err = s.appServiceUser(r.Context(), svc, r)
		} else {
			dev, err = s.lookupToken(r.Context(), tok, serve.ClientIP(r))
		}
		if err != nil {
			s.writeErr(w, "access token lookup", err)
			return
		}
		if seeAnswered {
			s.seeAnswered(r.Context())
		}
		h(w, r, dev)
	}
}

// requestToken extracts the access token. Like Synapse, it refuses a request carrying
// both forms (or several query parameters) rather than guess which one counts.
func requestToken(r *http.Request) (string, error) {
	headers := r.Header.Values("Authorization")
	params := r.URL.Query()["access_token"]
	switch {
	case len(headers)+len(params) == 0:
		return "", matrix.Errorf(http.StatusUnauthorized, matrix.CodeMissingToken, "Missing access token")
	case len(headers)+len(params) > 1:
		return "", matrix.Errorf(http.StatusUnauthorized, matrix.CodeMissingToken, "Give the access token once, either as Authorization header or as access_token parameter")
	case len(params) == 1:
		if params[0] == "" {
			return "", matrix.Errorf(http.StatusUnauthorized, matrix.CodeMissingToken, "Missing access token")
		}
		return params[0], nil
	}
	scheme, tok, ok := strings.Cut(headers[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", matrix.Errorf(http.StatusUnauthorized, matrix.CodeMissingToken, "Invalid Authorization header")
	}
	return strings.TrimSpace(tok), nil
}

var errUnknownToken = matrix.Errorf(http.StatusUnauthorized, matrix.CodeUnknownToken, "Unknown access token").With("soft_logout", false)

// errExpiredToken answers a refreshable access token past its expiry: the client
// refreshes it and goes on (soft logout).
var errExpiredToken = matrix.Errorf(http.StatusUnauthorized, matrix.CodeUnknownToken, "Access token has expired").With("soft_logout", true)

func hashToken(tok string) [sha256.Size]byte { return sha256.Sum256([]byte(tok)) }

// lookupToken resolves a token through the cache, then Postgres, which also notes that
// the device was seen from ip.
func (s *Server) lookupToken(ctx context.Context, tok, ip string) (Device, error) {
	h := hashToken(tok)
	if dev, ok := s.tokens.get(h); ok {
		return dev, nil
	}
	gen := s.tokens.generation()
	userID, deviceID, expires, err := s.DB.LookupToken(ctx, h[:], ip)
	if errors.Is(err, persist.ErrNotFound) {
		return Device{}, errUnknownToken
	}
	if err != nil {
		return Device{}, err
	}
	if !expires.IsZero() && !time.Now().Before(expires) {
		return Device{}, errExpiredToken
	}
	dev := Device{UserID: userID, DeviceID: deviceID}
	s.tokens.put(h, dev, gen, expires)
	return dev, nil
}

// newAccessToken mints a token for userID and returns it with the hash that is stored.
// The format is Synapse's, syt_<base64 localpart>_<random>, because the seed's nginx
// configuration routes /sync by the localpart it reads from the token; the random part
// carries 256 bits from crypto/rand.
func newAccessToken(userID string) (string, [sha256.Size]byte) {
	localpart, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	tok := "syt_" + base64.RawURLEncoding.EncodeToString([]byte(localpart)) + "_" + randomString(43, alphanumeric)
	return tok, hashToken(tok)
}

const (
	alphanumeric = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	letters      = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	upperLetters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

// randomString draws n characters uniformly from alphabet (at most 256 characters) with
// crypto/rand; bytes beyond the largest multiple of len(alphabet) are redrawn so every
// character is equally likely.
func randomString(n int, alphabet string) string {
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	var buf [64]byte
	for len(out) < n {
		_, _ = rand.Read(buf[:]) // crypto/rand.Read never fails
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out)
}

// tokenTTL bounds how long a gateway trusts a cached token lookup. A token revoked
// through another gateway keeps working here for at most this long; one revoked through
// this gateway stops at once, because the revoking handler also drops it from the cache.
const tokenTTL = 3 * time.Second

// tokenCacheMax bounds the cache's memory; past it, expired entries are dropped, and if
// that is not enough, all of them (they are only a shortcut to Postgres).
const tokenCacheMax = 100_000

// tokenCache remembers recent token lookups, keyed by token hash, so an active client
// costs one Postgres query per tokenTTL instead of one per request. The zero value is
// ready to use.
type tokenCache struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]cachedToken
	// gen counts revocations. A lookup that raced with one does not cache its answer:
	// it may have read the token just before the revocation deleted it.
	gen uint64
	// now is the clock; nil means time.Now. Tests replace it to step past the TTL.
	now func() time.Time
	// uncached holds, per user, until when their lookups are not cached: another
	// process is revoking tokens of theirs, and Postgres may not show it yet.
	uncached map[string]time.Time
}

type cachedToken struct {
	dev     Device
	expires time.Time
}

func (c *tokenCache) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

func (c *tokenCache) get(h [sha256.Size]byte) (Device, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[h]
	if !ok || !c.clock().Before(e.expires) {
		return Device{}, false
	}
	return e.dev, true
}

func (c *tokenCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// put caches a lookup made when the generation was gen, unless a revocation happened
// since, until the token expires (zero: never) or tokenTTL at most.
func (c *tokenCache) put(h [sha256.Size]byte, dev Device, gen uint64, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock()
	if gen != c.gen || now.Before(c.uncached[dev.UserID]) {
		return
	}
	if c.entries == nil {
		c.entries = map[[sha256.Size]byte]cachedToken{}
	}
	if len(c.entries) >= tokenCacheMax {
		for k, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= tokenCacheMax {
			clear(c.entries)
		}
	}
	until := now.Add(tokenTTL)
	if !expires.IsZero() && expires.Before(until) {
		until = expires
	}
	c.entries[h] = cachedToken{dev: dev, expires: until}
}

// forgetUser drops the tokens cached for user, and caches none of theirs for
// tokenTTL: another process revokes some of them, and its projection may land a
// moment later, after which every lookup here reads it.
func (c *tokenCache) forgetUser(user string) {
	c.forget(func(d Device) bool { return d.UserID == user })
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock()
	if c.uncached == nil {
		c.uncached = map[string]time.Time{}
	}
	for u, until := range c.uncached {
		if !now.Before(until) {
			delete(c.uncached, u)
		}
	}
	c.uncached[user] = now.Add(tokenTTL)
}

// forget drops every cached token whose device matches; callers revoke in Postgres
// first, then forget, so no later lookup can re-cache the revoked token.
func (c *tokenCache) forget(match func(Device) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for k, e := range c.entries {
		if match(e.dev) {
			delete(c.entries, k)
		}
	}
}
