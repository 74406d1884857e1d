package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// writeAccounts forwards a write to the writer of the accounts stream that owns key
// (the user ID for writes about a user, the alias for the room directory), as dev. It
// returns once the writer has projected the write, so any gateway reads it at once: a
// new access token works everywhere as soon as its login is answered.
func (s *Server) writeAccounts(ctx context.Context, dev Device, key, op string, body any) (*schemas.IntentResult, error) {
	return s.writeStream(ctx, dev, streamWrite{stream: schemas.StreamAccounts, op: op, key: key, body: body})
}

// createDevice gives userID the device d with its access token (hashed in d): a new
// device, or a known one whose earlier tokens stop working.
func (s *Server) createDevice(ctx context.Context, userID string, d userstreams.NewDevice) error {
	if _, err := s.writeAccounts(ctx, Device{UserID: userID, DeviceID: d.ID}, userID, userstreams.OpLogin, d); err != nil {
		return err
	}
	s.tokens.forget(func(c Device) bool { return c.UserID == userID && c.DeviceID == d.ID })
	return nil
}

// removeDevices deletes those of the user's devices that exist, every one of them when
// all is set, with their access tokens, and returns the devices deleted.
func (s *Server) removeDevices(ctx context.Context, userID string, deviceIDs []string, all bool) ([]string, error) {
	res, err := s.writeAccounts(ctx, Device{UserID: userID}, userID, userstreams.OpDeleteDevices, userstreams.DeleteDevices{Devices: deviceIDs, All: all})
	if err != nil {
		return nil, err
	}
	var ans schemas.DevicesDeletedAnswer
	if err := json.Unmarshal(res.Body, &ans); err != nil {
		return nil, fmt.Errorf("accounts writer's answer to a deletion of devices: %w", err)
	}
	// Other gateways stop trusting their cached lookups of these tokens within tokenTTL.
	s.tokens.forget(func(d Device) bool { return d.UserID == userID && (all || slices.Contains(ans.Deleted, d.DeviceID)) })
	return ans.Deleted, nil
}

// hasCode reports whether err is a Matrix error with errcode code.
func hasCode(err error, code string) bool {
	var me *matrix.Error
	return errors.As(err, &me) && me.Code == code
}
