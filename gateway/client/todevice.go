package client

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// Bounds of /sendToDevice.
const (
	// maxSendToDeviceBody bounds a request: its write to the to_device writer must fit
	// one NATS message (1 MiB by default), of which it may take three quarters, as
	// event appends do. Clients send their room keys in chunks well below it.
	maxSendToDeviceBody = 768 << 10
	// maxToDeviceContent bounds one message's content as canonical JSON, Synapse's bound
	// (so the message could cross federation).
	maxToDeviceContent = 65536
	// maxTxnIDLen bounds transaction ids, which Postgres indexes.
	maxTxnIDLen = 1024
)

func (s *Server) registerToDevice(r router) {
	r.handle("PUT", "/sendToDevice/{eventType}/{txnId}", modernVersions, s.authed(s.sendToDevice))
}

// decodeSendToDevice reads a /sendToDevice body: recipients (user IDs) mapped to device
// IDs, or "*", mapped to each message's content, an object.
func decodeSendToDevice(r *http.Request) (map[string]map[string]json.RawMessage, error) {
	var body struct {
		Messages json.RawMessage `json:"messages"`
	}
	if err := matrix.DecodeBody(r, maxSendToDeviceBody, &body); err != nil {
		return nil, err
	}
	if len(body.Messages) == 0 {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, "Missing params: ['messages']")
	}
	var messages map[string]map[string]json.RawMessage
	if err := json.Unmarshal(body.Messages, &messages); err != nil || messages == nil {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "messages must map user IDs to objects of device IDs and contents")
	}
	for user, byDevice := range messages {
		if !validUserID(user) {
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid user ID %q", user)
		}
		if byDevice == nil {
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "the messages for %s must be an object of device IDs and contents", user)
		}
		for device, content := range byDevice {
			if !isJSONObject(content) {
				return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "the content for %s %s must be an object", user, device)
			}
			// Canonical JSON is never longer than the JSON it is made from.
			if len(content) > maxToDeviceContent {
				if c, err := gomatrixserverlib.CanonicalJSON(content); err != nil || len(c) > maxToDeviceContent {
					return nil, matrix.Errorf(http.StatusRequestEntityTooLarge, matrix.CodeTooLarge,
						"to-device message for %s %s is larger than %d bytes", user, device, maxToDeviceContent)
				}
			}
		}
	}
	return messages, nil
}

// sendToDevice forwards a /sendToDevice request to the to_device writer of the sender.
// The write's id comes from the sender's device and the path, and the writer remembers
// each device's transaction ids, so a retry delivers nothing twice, whenever it comes.
func (s *Server) sendToDevice(w http.ResponseWriter, r *http.Request, dev Device) {
	txn := r.PathValue("txnId")
	if len(txn) > maxTxnIDLen {
		s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "transaction ids are at most %d bytes", maxTxnIDLen))
		return
	}
	messages, err := decodeSendToDevice(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	for user := range messages {
		if _, server, _ := strings.Cut(user, ":"); server != s.ServerName {
			s.Log.Info("to-device messages for a remote user dropped: federation is not built yet",
				zap.String("sender", dev.UserID), zap.String("user_id", user), zap.Int("messages", len(messages[user])))
			delete(messages, user)
		}
	}
	_, err = s.writeStream(r.Context(), dev, streamWrite{stream: schemas.StreamToDevice, op: userstreams.OpToDeviceSend,
		key: dev.UserID, id: txnIntentID(dev, r), unseenBySender: true,
		body: userstreams.ToDeviceSend{Type: r.PathValue("eventType"), Txn: txn, Messages: messages}})
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// clearToDevice has the to_device writer of dev's user empty the inboxes of the user's
// devices up to upTo, a position they have synced past, or, with upTo 0, everything of
// devices that are gone. Only devices with something to delete are named, so most calls
// cost one query and no write.
func (s *Server) clearToDevice(ctx context.Context, dev Device, devices []string, upTo uint64) error {
	pending, err := s.toDevice.Pending(ctx, dev.UserID, devices, upTo)
	if err != nil || len(pending) == 0 {
		return err
	}
	_, err = s.writeStream(ctx, dev, streamWrite{stream: schemas.StreamToDevice, op: userstreams.OpToDeviceDelete,
		key: dev.UserID, unseenBySender: true, body: userstreams.ToDeviceDelete{Devices: pending, UpTo: upTo}})
	return err
}
