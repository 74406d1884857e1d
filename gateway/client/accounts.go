package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/gateway/serve"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/accounts"
	"github.com/ganglionhq/ganglion/processors/appservice"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

func (s *Server) registerAccounts(r router) {
	r.mux.HandleFunc("GET /_matrix/client/versions", s.versions)
	r.handle("POST", "/register", modernVersions, s.register)
	r.handle("GET", "/register/available", modernVersions, s.registerAvailable)
	r.handle("GET", "/login", allVersions, s.loginFlows)
	r.handle("POST", "/login", allVersions, s.login)
	r.handle("POST", "/refresh", modernVersions, s.refresh)
	r.handle("POST", "/logout", allVersions, s.authed(s.logout))
	r.handle("POST", "/logout/all", allVersions, s.authed(s.logoutAll))
	r.handle("GET", "/account/whoami", modernVersions, s.authed(s.whoami))
	r.handle("POST", "/user/{userId}/filter", modernVersions, s.authed(s.postFilter))
	r.handle("GET", "/user/{userId}/filter/{filterId}", modernVersions, s.authed(s.getFilter))
}

// accountBodyLimit bounds account request bodies; the biggest legitimate one, a filter,
// is a few KiB.
const accountBodyLimit = matrix.DefaultBodyLimit

// Limits Synapse also applies: longer device display names are cut, longer passwords and
// device IDs refused.
const (
	maxDisplayNameLen = 100
	maxPasswordLen    = 512
	maxDeviceIDLen    = 255
	maxUserIDLen      = 255
)

// registerUIA is registration under user-interactive auth: it is open
// (EnableRegistration) or closed, so the only stage is the dummy one.
var registerUIA = uiaOp{kind: "register", flows: [][]string{{stageDummy}},
	check: func(context.Context, *uiaAuth) (*matrix.Error, error) { return nil, nil }}

type versionsResponse struct {
	Versions         []string        `json:"versions"`
	UnstableFeatures map[string]bool `json:"unstable_features"`
}

// versions advertises the spec versions whose endpoints we serve under their prefixes: r0
// and v1.1 to v1.5.
func (s *Server) versions(w http.ResponseWriter, r *http.Request) {
	matrix.WriteJSON(w, http.StatusOK, versionsResponse{
		Versions: []string{"r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
			"v1.1", "v1.2", "v1.3", "v1.4", "v1.5"},
		UnstableFeatures: map[string]bool{},
	})
}

type registerRequest struct {
	// Type is m.login.application_service for a service's registration.
	Type                     string   `json:"type"`
	Username                 string   `json:"username"`
	Password                 string   `json:"password"`
	DeviceID                 string   `json:"device_id"`
	InitialDeviceDisplayName string   `json:"initial_device_display_name"`
	InhibitLogin             bool     `json:"inhibit_login"`
	Auth                     *uiaAuth `json:"auth"`
	RefreshToken             bool     `json:"refresh_token"`
}

type credentialsResponse struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id,omitempty"`
	// HomeServer is deprecated in the spec but still read by older clients.
	HomeServer string `json:"home_server"`
	deviceTokens
}

// deviceTokens are the tokens a device gets at login, registration or refresh: a
// refreshable access token comes with its refresh token and its life.
type deviceTokens struct {
	AccessToken  string `json:"access_token,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	ExpiresInMS  int64  `json:"expires_in_ms,omitempty"`
}

// DefaultRefreshableTokenLifetime is Synapse's refreshable_access_token_lifetime.
const DefaultRefreshableTokenLifetime = 5 * time.Minute

// newDeviceTokens mints a device's tokens: an access token, and with refresh a refresh
// token ("syr_", as Synapse's) and the access token's life; d gets their hashes.
func (s *Server) newDeviceTokens(userID string, d *userstreams.NewDevice, refresh bool) deviceTokens {
	tok, h := newAccessToken(userID)
	d.TokenHash = h[:]
	out := deviceTokens{AccessToken: tok}
	if refresh {
		life := s.RefreshableTokenLifetime
		if life <= 0 {
			life = DefaultRefreshableTokenLifetime
		}
		out.RefreshToken = "syr_" + randomString(43, alphanumeric)
		rh := hashToken(out.RefreshToken)
		d.RefreshHash, d.LifetimeMS, out.ExpiresInMS = rh[:], life.Milliseconds(), life.Milliseconds()
	}
	return out
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	switch kind := r.URL.Query().Get("kind"); kind {
	case "", "user":
	case "guest":
		matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeGuestAccessForbidden, "Guest access is disabled"))
		return
	default:
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "Unknown registration kind %q", kind))
		return
	}
	// An application service registers the users of its namespace with its as_token,
	// whether registration is open or not.
	svc, isService := s.registeringService(r)
	if !isService && !s.EnableRegistration {
		matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "Registration has been disabled"))
		return
	}
	if !isService && !check(w, s.limits.registration, serve.ClientIP(r)) {
		return
	}
	req, userID, err := s.decodeRegister(r, isService)
	if err == nil && (isService || req.Type == loginTypeAppService) {
		err = s.checkServiceRegistration(r, svc, req, userID)
	} else if _, reserved := s.AppServices.ExclusiveUser(userID); err == nil && reserved {
		err = errReservedUser
	}
	if err != nil {
		matrix.WriteError(w, err)
		return
	}
	ctx := r.Context()
	// Fail fast on a taken username, before the client goes through the auth stages.
	if userID != "" {
		if exists, err := s.DB.UserExists(ctx, userID); err != nil {
			s.internalError(w, "check username", err)
			return
		} else if exists {
			matrix.WriteError(w, errUserInUse)
			return
		}
	}

	var session string
	if !isService {
		var incomplete *uiaResponse
		session, incomplete, err = s.interactiveAuth(ctx, registerUIA, req.Auth)
		if err != nil {
			s.writeErr(w, "registration auth", err)
			return
		}
		if incomplete != nil {
			matrix.WriteJSON(w, http.StatusUnauthorized, incomplete)
			return
		}
	}

	// The password is hashed once, here: the stream, like Postgres, never holds it.
	var hash string
	if req.Password != "" && !isService {
		h, err := s.DB.HashPassword(ctx, req.Password)
		if err != nil {
			s.internalError(w, "hash password", err)
			return
		}
		hash = string(h)
	}
	var dev *userstreams.NewDevice
	var toks deviceTokens
	createUser := func(userID string) error {
		body := userstreams.Register{PasswordHash: hash}
		if !req.InhibitLogin {
			dev = &userstreams.NewDevice{ID: deviceIDOrNew(req.DeviceID), DisplayName: displayName(req.InitialDeviceDisplayName)}
			toks = s.newDeviceTokens(userID, dev, req.RefreshToken)
			body.Device = dev
		}
		_, err := s.writeAccounts(ctx, Device{UserID: userID}, userID, userstreams.OpRegister, body)
		return err
	}
	if userID != "" {
		err = createUser(userID)
	} else {
		userID, err = s.createGeneratedUser(ctx, createUser)
	}
	if err != nil {
		s.writeErr(w, "create user", err)
		return
	}
	if !isService {
		// The session authorised this one registration; a replay must start over.
		s.endUIASession(ctx, session)
		s.limits.registration.Take(serve.ClientIP(r))
	}
	s.Log.Info("registered user", zap.String("user_id", userID), zap.Bool("application_service", isService))
	resp := credentialsResponse{UserID: userID, HomeServer: s.ServerName}
	if dev != nil {
		resp.deviceTokens, resp.DeviceID = toks, dev.ID
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
}

const loginTypeAppService = "m.login.application_service"

// registeringService returns the application service whose as_token the request
// carries; isService is set for any access token, which only a service gives here.
func (s *Server) registeringService(r *http.Request) (svc *appservice.Service, isService bool) {
	tok, err := requestToken(r)
	if err != nil {
		return nil, !hasCode(err, matrix.CodeMissingToken) || len(r.Header.Values("Authorization"))+len(r.URL.Query()["access_token"]) > 0
	}
	svc, _ = s.AppServices.ByToken(tok)
	return svc, true
}

// checkServiceRegistration checks a registration by an application service: its
// as_token, the m.login.application_service type, and a username of its namespace.
func (s *Server) checkServiceRegistration(r *http.Request, svc *appservice.Service, req registerRequest, userID string) error {
	if svc == nil {
		if _, err := requestToken(r); err != nil {
			return err
		}
		return errUnknownToken
	}
	if req.Type != loginTypeAppService {
		return matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "An application service registers with type %s", loginTypeAppService)
	}
	if userID == "" {
		return matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidUsername, "An application service names the user it registers")
	}
	return s.checkAppServiceUsername(svc, userID)
}

// decodeRegister reads a registration body and checks what needs no database: the
// username (returned as a user ID, empty when the server is to pick one), the password's
// and the device ID's length.
func (s *Server) decodeRegister(r *http.Request, forService bool) (req registerRequest, userID string, err error) {
	if err := matrix.DecodeBody(r, accountBodyLimit, &req); err != nil {
		return req, "", err
	}
	if req.Username != "" {
		localpart := strings.ToLower(req.Username)
		if err := s.validateLocalpart(localpart, forService); err != nil {
			return req, "", err
		}
		userID = s.userID(localpart)
	}
	if len(req.Password) > maxPasswordLen {
		return req, "", matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "Password is longer than %d bytes", maxPasswordLen)
	}
	return req, userID, validateDeviceID(req.DeviceID)
}

// createGeneratedUser registers a numeric localpart from the database's sequence, moving
// past numbers an imported account already holds.
func (s *Server) createGeneratedUser(ctx context.Context, create func(userID string) error) (string, error) {
	for range 10 {
		localpart, err := s.DB.NextLocalpart(ctx)
		if err != nil {
			return "", err
		}
		userID := s.userID(localpart)
		err = create(userID)
		if !hasCode(err, matrix.CodeUserInUse) {
			return userID, err
		}
	}
	return "", errors.New("no free generated localpart after 10 attempts")
}

var errUserInUse = matrix.Errorf(http.StatusBadRequest, matrix.CodeUserInUse, "User ID already taken")

func (s *Server) userID(localpart string) string { return "@" + localpart + ":" + s.ServerName }

// validateLocalpart applies the rules for new (lower-cased) localparts: the spec's
// character set, Synapse's reservations (a leading '_' for application services, numeric
// names for generated accounts) and the 255-byte bound on user IDs.
func (s *Server) validateLocalpart(localpart string, forService bool) error {
	invalid := func(msg string) error {
		return matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidUsername, "%s", msg)
	}
	if localpart == "" {
		return invalid("User ID cannot be empty")
	}
	for _, c := range []byte(localpart) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("._=-/+", c) >= 0) {
			return invalid("User ID can only contain characters a-z, 0-9, or '=_-./+'")
		}
	}
	if localpart[0] == '_' && !forService {
		return invalid("User ID may not begin with _")
	}
	if strings.Trim(localpart, "0123456789") == "" {
		return invalid("Numeric user IDs are reserved for generated accounts")
	}
	if len(s.userID(localpart)) > maxUserIDLen {
		return invalid("User ID is too long")
	}
	return nil
}

func validateDeviceID(id string) error {
	if len(id) > maxDeviceIDLen {
		return matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "device_id is longer than %d bytes", maxDeviceIDLen)
	}
	return nil
}

// deviceIDOrNew returns the requested device ID or a new one in Synapse's style (ten
// capital letters).
func deviceIDOrNew(id string) string {
	if id != "" {
		return id
	}
	return randomString(10, upperLetters)
}

// displayName cuts a device display name to maxDisplayNameLen characters; an empty
// one is none.
func displayName(name string) *string {
	if name == "" {
		return nil
	}
	if utf8.RuneCountInString(name) > maxDisplayNameLen {
		name = string([]rune(name)[:maxDisplayNameLen])
	}
	return &name
}

func (s *Server) registerAvailable(w http.ResponseWriter, r *http.Request) {
	if !s.EnableRegistration {
		matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "Registration has been disabled"))
		return
	}
	if !check(w, s.limits.registration, serve.ClientIP(r)) {
		return
	}
	username := r.URL.Query().Get("username")
	if username == "" {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, "Missing username"))
		return
	}
	localpart := strings.ToLower(username)
	if err := s.validateLocalpart(localpart, false); err != nil {
		matrix.WriteError(w, err)
		return
	}
	if _, reserved := s.AppServices.ExclusiveUser(s.userID(localpart)); reserved {
		matrix.WriteError(w, errReservedUser)
		return
	}
	exists, err := s.DB.UserExists(r.Context(), s.userID(localpart))
	if err != nil {
		s.internalError(w, "check username", err)
		return
	}
	if exists {
		matrix.WriteError(w, errUserInUse)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]bool{"available": true})
}

const loginTypePassword = "m.login.password"

func (s *Server) loginFlows(w http.ResponseWriter, r *http.Request) {
	matrix.WriteJSON(w, http.StatusOK, map[string][]map[string]string{"flows": {{"type": loginTypePassword}}})
}

// userIdentifier names the user of a password login or auth stage.
type userIdentifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

type loginRequest struct {
	Type       string          `json:"type"`
	Identifier *userIdentifier `json:"identifier"`
	// User is the pre-identifier form of m.id.user, still sent by older clients.
	User                     string `json:"user"`
	Password                 string `json:"password"`
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
	RefreshToken             bool   `json:"refresh_token"`
}

var errBadLogin = matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "Invalid username or password")

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if !take(w, s.limits.loginAddress, serve.ClientIP(r)) {
		return
	}
	req, userID, err := s.decodeLogin(r)
	if err != nil {
		matrix.WriteError(w, err)
		return
	}
	if !check(w, s.limits.loginFailed, userID) {
		return
	}
	ctx := r.Context()
	switch err := s.DB.CheckPassword(ctx, userID, req.Password); {
	case errors.Is(err, persist.ErrNotFound), errors.Is(err, persist.ErrWrongPassword):
		s.limits.loginFailed.Take(userID)
		matrix.WriteError(w, errBadLogin)
		return
	case err != nil:
		s.internalError(w, "check password", err)
		return
	}
	if !take(w, s.limits.loginAccount, userID) {
		return
	}
	dev := userstreams.NewDevice{ID: deviceIDOrNew(req.DeviceID), DisplayName: displayName(req.InitialDeviceDisplayName)}
	toks := s.newDeviceTokens(userID, &dev, req.RefreshToken)
	if err := s.createDevice(ctx, userID, dev); err != nil {
		s.writeErr(w, "create device", err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, credentialsResponse{UserID: userID, deviceTokens: toks, DeviceID: dev.ID, HomeServer: s.ServerName})
}

// decodeLogin reads a password login body and returns it with the user ID it names.
func (s *Server) decodeLogin(r *http.Request) (req loginRequest, userID string, err error) {
	if err := matrix.DecodeBody(r, accountBodyLimit, &req); err != nil {
		return req, "", err
	}
	if req.Type != loginTypePassword {
		return req, "", matrix.Errorf(http.StatusBadRequest, matrix.CodeUnknown, "Unknown login type %q", req.Type)
	}
	if err := validateDeviceID(req.DeviceID); err != nil {
		return req, "", err
	}
	userID, ok, err := s.identifiedUser(req.Identifier, req.User)
	if err != nil {
		return req, "", err
	}
	if !ok {
		return req, "", errBadLogin
	}
	return req, userID, nil
}

// identifiedUser reads the user a password login or auth stage names: an m.id.user
// identifier, or the older top-level user. ok is false for a user of another server.
func (s *Server) identifiedUser(id *userIdentifier, legacyUser string) (userID string, ok bool, err error) {
	user := legacyUser
	if id != nil && (id.Type != "" || id.User != "") {
		if id.Type != "m.id.user" {
			return "", false, matrix.Errorf(http.StatusBadRequest, matrix.CodeUnknown, "Unknown login identifier type %q", id.Type)
		}
		user = id.User
	}
	if user == "" {
		return "", false, matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, "Missing user identifier")
	}
	userID, ok = s.localUserID(user)
	return userID, ok, nil
}

// localUserID turns a login's user (a localpart or a full user ID of this server) into a
// user ID. Localparts are compared lower-cased, as registration stores them.
func (s *Server) localUserID(user string) (string, bool) {
	localpart := user
	if rest, ok := strings.CutPrefix(user, "@"); ok {
		var server string
		localpart, server, ok = strings.Cut(rest, ":")
		if !ok || server != s.ServerName {
			return "", false
		}
	}
	if localpart == "" {
		return "", false
	}
	return s.userID(strings.ToLower(localpart)), true
}

// logout deletes the device, as Synapse does: its token, and everything of the device.
func (s *Server) logout(w http.ResponseWriter, r *http.Request, dev Device) {
	if err := s.deleteDevices(r.Context(), dev, []string{dev.DeviceID}, false); err != nil {
		s.writeErr(w, "logout", err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// logoutAll deletes every device of the user.
func (s *Server) logoutAll(w http.ResponseWriter, r *http.Request, dev Device) {
	if err := s.deleteDevices(r.Context(), dev, nil, true); err != nil {
		s.writeErr(w, "logout all", err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

type whoamiResponse struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id"`
	IsGuest  bool   `json:"is_guest"`
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request, dev Device) {
	matrix.WriteJSON(w, http.StatusOK, whoamiResponse{UserID: dev.UserID, DeviceID: dev.DeviceID})
}

// ownUser rejects requests about another user's filters.
func ownUser(r *http.Request, dev Device) error {
	if r.PathValue("userId") != dev.UserID {
		return matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "Cannot access filters of other users")
	}
	return nil
}

func (s *Server) postFilter(w http.ResponseWriter, r *http.Request, dev Device) {
	if err := ownUser(r, dev); err != nil {
		matrix.WriteError(w, err)
		return
	}
	var raw json.RawMessage
	if err := matrix.DecodeBody(r, accountBodyLimit, &raw); err != nil {
		matrix.WriteError(w, err)
		return
	}
	if !schemas.IsObject(raw) {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "a filter is a JSON object"))
		return
	}
	// The client's own JSON is stored, unknown keys included; it must parse as a filter.
	if _, err := parseFilter(raw); err != nil {
		matrix.WriteError(w, err)
		return
	}
	res, err := s.writeAccounts(r.Context(), dev, dev.UserID, userstreams.OpCreateFilter, userstreams.CreateFilter{Filter: raw})
	if err != nil {
		s.writeErr(w, "store filter", err)
		return
	}
	var ans schemas.FilterAnswer
	if err := json.Unmarshal(res.Body, &ans); err != nil {
		s.internalError(w, "store filter", err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"filter_id": strconv.FormatInt(ans.FilterID, 10)})
}

func (s *Server) getFilter(w http.ResponseWriter, r *http.Request, dev Device) {
	if err := ownUser(r, dev); err != nil {
		matrix.WriteError(w, err)
		return
	}
	id, err := strconv.ParseInt(r.PathValue("filterId"), 10, 64)
	if err != nil || id < 0 {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "Invalid filter ID"))
		return
	}
	raw, err := s.DB.GetFilter(r.Context(), dev.UserID, id)
	if errors.Is(err, persist.ErrNotFound) {
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "No such filter"))
		return
	}
	if err != nil {
		s.internalError(w, "read filter", err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, json.RawMessage(raw))
}

// writeErr answers with a Matrix error as is and anything else as internal. Every
// failure a handler answers goes through it.
func (s *Server) writeErr(w http.ResponseWriter, what string, err error) {
	var me *matrix.Error
	if errors.As(err, &me) {
		matrix.WriteError(w, err)
		return
	}
	s.internalError(w, what, err)
}

// databaseRetryAfter is the retry hint of an answer to a request met by a database
// outage: about what a Postgres restart or failover takes.
const databaseRetryAfter = 2 * time.Second

var errDatabaseUnavailable = matrix.Errorf(http.StatusServiceUnavailable, matrix.CodeUnknown, "The database is unavailable; retry later").
	With("retry_after_ms", databaseRetryAfter.Milliseconds())

// internalError answers a failure that is not the request's fault: a transient one of
// the database (persist.Transient) with 503 and a retry hint, anything else with 500;
// both without their details, which are logged.
func (s *Server) internalError(w http.ResponseWriter, what string, err error) {
	if errors.Is(err, context.Canceled) {
		// The client went away: nobody reads an answer.
		s.Log.Debug("client gone before the answer", zap.String("op", what))
		return
	}
	if persist.Transient(err) {
		s.Log.Warn("client API request met a database outage", zap.String("op", what), zap.Error(err))
		w.Header().Set("Retry-After", strconv.Itoa(int(databaseRetryAfter/time.Second)))
		matrix.WriteError(w, errDatabaseUnavailable)
		return
	}
	s.Log.Error("client API request failed", zap.String("op", what), zap.Error(err))
	matrix.WriteError(w, err)
}

type refreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

// refresh exchanges a refresh token for a new access token and refresh token of the
// same device; the old ones stop working. A refresh token works once.
func (s *Server) refresh(w http.ResponseWriter, r *http.Request) {
	var req refreshRequest
	if err := matrix.DecodeBody(r, accountBodyLimit, &req); err != nil {
		s.writeErr(w, "refresh", err)
		return
	}
	used := hashToken(req.RefreshToken)
	userID, deviceID, err := accounts.Store{Pool: s.DB.Pool}.RefreshToken(r.Context(), used[:])
	if errors.Is(err, accounts.ErrNotFound) || req.RefreshToken == "" {
		matrix.WriteError(w, matrix.Errorf(http.StatusUnauthorized, matrix.CodeUnknownToken, "Unknown refresh token").With("soft_logout", false))
		return
	}
	if err != nil {
		s.writeErr(w, "refresh", err)
		return
	}
	dev := userstreams.NewDevice{ID: deviceID}
	toks := s.newDeviceTokens(userID, &dev, true)
	if _, err := s.writeAccounts(r.Context(), Device{UserID: userID, DeviceID: deviceID}, userID, userstreams.OpRefresh,
		userstreams.Refresh{Used: used[:], New: dev}); err != nil {
		s.writeErr(w, "refresh", err)
		return
	}
	s.tokens.forget(func(d Device) bool { return d.UserID == userID && d.DeviceID == deviceID })
	matrix.WriteJSON(w, http.StatusOK, toks)
}

// AccountsRecordElsewhere tells the process of a record of the accounts stream,
// whichever process wrote it, so what it changes counts here as soon as Postgres has
// it:
//   - one that revokes access tokens of its user (a logout, a device deleted, a
//     deactivation, a token replaced): the tokens cached for them here are forgotten,
//     and none of theirs is cached for the cache's lifetime;
//   - an erasure: the erased users are read again at every read for a while.
func (s *Server) AccountsRecordElsewhere(r *schemas.AccountsRecord) {
	if r.RevokesTokens() {
		s.tokens.forgetUser(r.User)
	}
	if r.Kind == schemas.AccountUserDeactivated && r.Erase {
		s.erased.erasedElsewhere()
	}
}
