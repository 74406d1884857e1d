package client

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/processors/appservice"
	"github.com/ganglionhq/ganglion/processors/userstreams"
)

// The application service side of the client API: a service's as_token authenticates
// it as its sender or, with user_id, as a user of its namespace; registration of those
// users; exclusive namespaces kept from everyone else; the ping; and asking a service
// about a user or alias of its exclusive namespace nobody knows yet.

func (s *Server) registerAppServices(r router) {
	r.mux.HandleFunc("POST /_matrix/client/v1/appservice/{appserviceId}/ping", storableParams(s.authed(s.pingAppService)))
}

// appServiceUser is the user a service's request acts as: user_id when given, its
// sender otherwise. The user must be the service's and exist (the sender is registered
// on its first request).
func (s *Server) appServiceUser(ctx context.Context, svc *appservice.Service, r *http.Request) (Device, error) {
	user := r.URL.Query().Get("user_id")
	if user == "" {
		user = svc.SenderID
	}
	dev := Device{UserID: user, AppService: svc}
	if !strings.HasSuffix(user, ":"+s.ServerName) || !svc.OwnsUser(user) {
		return dev, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "Application service cannot masquerade as this user (%s).", user)
	}
	exists, err := s.DB.UserExists(ctx, user)
	if err != nil || exists {
		return dev, err
	}
	if user != svc.SenderID {
		return dev, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "Application service has not registered this user (%s).", user)
	}
	_, err = s.writeAccounts(ctx, Device{UserID: user}, user, userstreams.OpRegister, userstreams.Register{})
	if hasCode(err, matrix.CodeUserInUse) {
		err = nil
	}
	return dev, err
}

// checkAppServiceUsername refuses the service a user outside its namespace, or in
// another's exclusive one.
func (s *Server) checkAppServiceUsername(svc *appservice.Service, userID string) error {
	if !svc.OwnsUser(userID) {
		return matrix.Errorf(http.StatusBadRequest, matrix.CodeExclusive, "Invalid user localpart for this application service.")
	}
	if other, ok := s.AppServices.ExclusiveUser(userID); ok && other != svc {
		return errReservedUser
	}
	return nil
}

var (
	errReservedUser  = matrix.Errorf(http.StatusBadRequest, matrix.CodeExclusive, "This user ID is reserved by an application service.")
	errReservedAlias = matrix.Errorf(http.StatusBadRequest, matrix.CodeExclusive, "This alias is reserved by an application service.")
)

// checkAliasFree refuses dev an alias in another's exclusive namespace.
func (s *Server) checkAliasFree(dev Device, alias string) error {
	if svc, ok := s.AppServices.ExclusiveAlias(alias); ok && svc != dev.AppService {
		return errReservedAlias
	}
	return nil
}

// askAppServiceForUser asks the service holding userID in an exclusive namespace
// whether it exists, which lets the service create it; it reports whether it did.
func (s *Server) askAppServiceForUser(ctx context.Context, userID string) bool {
	svc, ok := s.AppServices.ExclusiveUser(userID)
	return ok && s.askAppService(ctx, svc, "user", userID, appservice.QueryUser)
}

// askAppServiceForAlias is askAppServiceForUser for an alias.
func (s *Server) askAppServiceForAlias(ctx context.Context, alias string) bool {
	svc, ok := s.AppServices.ExclusiveAlias(alias)
	return ok && s.askAppService(ctx, svc, "alias", alias, appservice.QueryAlias)
}

func (s *Server) askAppService(ctx context.Context, svc *appservice.Service, kind, what string,
	query func(context.Context, *http.Client, *appservice.Service, string) (bool, error)) bool {
	if svc.URL == "" {
		return false
	}
	found, err := query(ctx, s.AppServiceHTTP, svc, what)
	if err != nil {
		s.Log.Info("application service query failed", zap.String("service", svc.ID), zap.String("kind", kind), zap.Error(err))
	}
	return found
}

// pingAppService is POST /_matrix/client/v1/appservice/{appserviceId}/ping: the service
// has the homeserver call its /_matrix/app/v1/ping and learns how long that took.
func (s *Server) pingAppService(w http.ResponseWriter, r *http.Request, dev Device) {
	svc := dev.AppService
	if svc == nil || svc.ID != r.PathValue("appserviceId") {
		matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "Only the application service itself can ping itself"))
		return
	}
	var body struct {
		TransactionID string `json:"transaction_id"`
	}
	if err := matrix.DecodeBody(r, accountBodyLimit, &body); err != nil {
		matrix.WriteError(w, err)
		return
	}
	took, err := appservice.Ping(r.Context(), s.AppServiceHTTP, svc, body.TransactionID)
	var se *appservice.StatusError
	switch {
	case err == nil:
		matrix.WriteJSON(w, http.StatusOK, map[string]int64{"duration_ms": took.Milliseconds()})
	case errors.Is(err, appservice.ErrNoURL):
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeURLNotSet, "Application service URL is not set"))
	case errors.As(err, &se):
		matrix.WriteError(w, matrix.Errorf(http.StatusBadGateway, matrix.CodeBadStatus, "Ping returned error response").
			With("status", se.Status).With("body", se.Body))
	case errors.Is(err, context.DeadlineExceeded):
		matrix.WriteError(w, matrix.Errorf(http.StatusGatewayTimeout, matrix.CodeConnectionTimeout, "Connection to application service timed out"))
	default:
		matrix.WriteError(w, matrix.Errorf(http.StatusBadGateway, matrix.CodeConnectionFailed, "Failed to connect to application service"))
	}
}
