package client

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
)

// User-interactive authentication (spec: "User-interactive authentication API"), one
// mechanism for every endpoint under it: registration (the dummy stage) and device
// deletion (the password stage). Sessions live in Postgres, so a client may continue
// one through another gateway.

// Stages offered.
const (
	stageDummy    = "m.login.dummy"
	stagePassword = loginTypePassword
)

// uiaAuth is the "auth" object of a request: the stage it completes, the session it
// continues, and the stage's own fields.
type uiaAuth struct {
	Type    string `json:"type"`
	Session string `json:"session"`
	// m.login.password: who (an identifier, or the older top-level user) and the
	// password.
	Identifier *userIdentifier `json:"identifier"`
	User       string          `json:"user"`
	Password   string          `json:"password"`
}

// uiaOp is one kind of operation under user-interactive authentication.
type uiaOp struct {
	// kind binds sessions to the operation, so stages completed for one cannot
	// authorise another.
	kind  string
	flows [][]string
	// check verifies a stage the client claims to complete (one the flows offer). A
	// failure is the client's, reported in the 401 body; err is answered as it is.
	check func(ctx context.Context, auth *uiaAuth) (failure *matrix.Error, err error)
}

// uiaResponse is the 401 body that tells a client which stages remain.
type uiaResponse struct {
	Flows     []uiaFlow      `json:"flows"`
	Params    map[string]any `json:"params"`
	Session   string         `json:"session"`
	Completed []string       `json:"completed"`
	ErrCode   string         `json:"errcode,omitempty"`
	Error     string         `json:"error,omitempty"`
}

type uiaFlow struct {
	Stages []string `json:"stages"`
}

func (op uiaOp) offers(stage string) bool {
	return slices.ContainsFunc(op.flows, func(f []string) bool { return slices.Contains(f, stage) })
}

func (op uiaOp) completedBy(completed []string) bool {
	return slices.ContainsFunc(op.flows, func(f []string) bool {
		return !slices.ContainsFunc(f, func(st string) bool { return !slices.Contains(completed, st) })
	})
}

func (op uiaOp) response(session string, completed []string) *uiaResponse {
	resp := &uiaResponse{Params: map[string]any{}, Session: session, Completed: completed}
	if resp.Completed == nil {
		resp.Completed = []string{}
	}
	for _, f := range op.flows {
		resp.Flows = append(resp.Flows, uiaFlow{Stages: f})
	}
	return resp
}

// interactiveAuth runs the stage a request carries. Once the session's completed
// stages make up a flow it returns the session (end it with endUIASession once the
// operation is done); until then the 401 body to answer. Without auth, or with a stage
// but no session, it starts a session, as Synapse does.
func (s *Server) interactiveAuth(ctx context.Context, op uiaOp, auth *uiaAuth) (session string, incomplete *uiaResponse, err error) {
	var completed []string
	if auth == nil || auth.Session == "" {
		if session, err = s.DB.CreateUIASession(ctx, op.kind); err != nil {
			return "", nil, err
		}
	} else {
		session = auth.Session
		if completed, err = s.DB.UIASession(ctx, session, op.kind); err != nil {
			return "", nil, uiaSessionError(err)
		}
	}
	var failure *matrix.Error
	if auth != nil && auth.Type != "" {
		if !op.offers(auth.Type) {
			failure = matrix.Errorf(http.StatusUnauthorized, matrix.CodeUnrecognized, "Unsupported authentication type %q", auth.Type)
		} else if failure, err = op.check(ctx, auth); err != nil {
			return "", nil, err
		} else if failure == nil {
			if completed, err = s.DB.CompleteUIAStage(ctx, session, op.kind, auth.Type); err != nil {
				return "", nil, uiaSessionError(err)
			}
		}
	}
	if op.completedBy(completed) {
		return session, nil, nil
	}
	incomplete = op.response(session, completed)
	if failure != nil {
		incomplete.ErrCode, incomplete.Error = failure.Code, failure.Message
	}
	return session, incomplete, nil
}

func uiaSessionError(err error) error {
	if errors.Is(err, persist.ErrNotFound) {
		return matrix.Errorf(http.StatusBadRequest, matrix.CodeUnknown, "Unknown or expired auth session")
	}
	return err
}

// endUIASession ends a session once the operation it authorised is done, so a replay of
// the request must authenticate again.
func (s *Server) endUIASession(ctx context.Context, session string) {
	if err := s.DB.DeleteUIASession(ctx, session); err != nil {
		s.Log.Warn("could not end an auth session", zap.Error(err))
	}
}

// passwordStage checks the m.login.password stage of a request by dev: the identified
// user must be dev's user, and the password theirs. A wrong password counts against
// rc_login.failed_attempts, as a failed login does.
func (s *Server) passwordStage(dev Device) func(context.Context, *uiaAuth) (*matrix.Error, error) {
	return func(ctx context.Context, auth *uiaAuth) (*matrix.Error, error) {
		userID, ok, err := s.identifiedUser(auth.Identifier, auth.User)
		if err != nil {
			return nil, err
		}
		if !ok {
			return errBadLogin, nil
		}
		if userID != dev.UserID {
			return nil, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "Invalid auth")
		}
		if auth.Password == "" {
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "Bad parameter: password")
		}
		switch err := s.DB.CheckPassword(ctx, userID, auth.Password); {
		case errors.Is(err, persist.ErrNotFound), errors.Is(err, persist.ErrWrongPassword):
			s.limits.loginFailed.Take(userID)
			return errBadLogin, nil
		case err != nil:
			return nil, err
		}
		return nil, nil
	}
}
