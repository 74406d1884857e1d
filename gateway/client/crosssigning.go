package client

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist/e2ekeys"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// maxSignaturesUpload bounds the signed objects of one /keys/signatures/upload.
const maxSignaturesUpload = 1000

type signingKeysRequest struct {
	userstreams.CrossSigningUpload
	Auth *uiaAuth `json:"auth"`
}

// uploadSigningKeys serves /keys/device_signing/upload. As in Synapse (MSC3967),
// setting up cross-signing the first time and sending the stored keys again need no
// authentication; replacing keys needs the account's password.
func (s *Server) uploadSigningKeys(w http.ResponseWriter, r *http.Request, dev Device) {
	var req signingKeysRequest
	if err := matrix.DecodeBody(r, matrix.DefaultBodyLimit, &req); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	ctx := r.Context()
	store := s.keyStore()
	different, setUp := false, false
	for _, k := range []struct {
		typ string
		raw json.RawMessage
	}{{e2ekeys.Master, req.Master}, {e2ekeys.SelfSigning, req.SelfSigning}, {e2ekeys.UserSigning, req.UserSigning}} {
		stored, err := store.CrossSigningKey(ctx, dev.UserID, k.typ)
		if err != nil && !errors.Is(err, e2ekeys.ErrNotFound) {
			s.writeErr(w, r.Pattern, err)
			return
		}
		if k.typ == e2ekeys.Master {
			setUp = stored != nil
		}
		if k.raw != nil {
			canonical, err := gomatrixserverlib.CanonicalJSON(k.raw)
			different = different || err != nil || string(canonical) != string(stored)
		}
	}
	if !different {
		matrix.WriteJSON(w, http.StatusOK, struct{}{})
		return
	}
	var session string
	if setUp {
		if !check(w, s.limits.loginFailed, dev.UserID) {
			return
		}
		op := uiaOp{kind: dev.UserID + " " + r.Method + " " + r.URL.Path, flows: [][]string{{stagePassword}}, check: s.passwordStage(dev)}
		var incomplete *uiaResponse
		var err error
		if session, incomplete, err = s.interactiveAuth(ctx, op, req.Auth); err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
		if incomplete != nil {
			matrix.WriteJSON(w, http.StatusUnauthorized, incomplete)
			return
		}
	}
	if _, err := s.writeStream(ctx, dev, streamWrite{stream: schemas.StreamDeviceLists, op: userstreams.OpCrossSigningUpload,
		key: dev.UserID, body: req.CrossSigningUpload}); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if session != "" {
		s.endUIASession(ctx, session)
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// uploadSignatures serves /keys/signatures/upload; the writer verifies each signature
// against the keys it stores and answers those that fail.
// decodeSignaturesUpload reads a /keys/signatures/upload body: signed objects by user
// and key ID.
func decodeSignaturesUpload(r *http.Request) (userstreams.SignaturesUpload, int, error) {
	var req userstreams.SignaturesUpload
	if err := matrix.DecodeBody(r, maxKeysUploadBody, &req); err != nil {
		return nil, 0, err
	}
	n := 0
	for _, keys := range req {
		n += len(keys)
		for _, obj := range keys {
			if !schemas.IsObject(obj) {
				return nil, 0, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "Invalid parameter")
			}
		}
	}
	if n > maxSignaturesUpload {
		return nil, 0, matrix.Errorf(http.StatusBadRequest, matrix.CodeTooLarge, "at most %d signed keys may be uploaded at once", maxSignaturesUpload)
	}
	return req, n, nil
}

func (s *Server) uploadSignatures(w http.ResponseWriter, r *http.Request, dev Device) {
	req, n, err := decodeSignaturesUpload(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if n == 0 {
		matrix.WriteJSON(w, http.StatusOK, map[string]any{"failures": map[string]any{}})
		return
	}
	res, err := s.writeStream(r.Context(), dev, streamWrite{stream: schemas.StreamDeviceLists, op: userstreams.OpSignaturesUpload,
		key: dev.UserID, body: req})
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, res.Body)
}
