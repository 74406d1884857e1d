package client

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/processors/userstreams"
)

func (s *Server) registerDevices(r router) {
	r.handle("GET", "/devices", modernVersions, s.authed(s.getDevices))
	r.handle("GET", "/devices/{deviceId}", modernVersions, s.authed(s.getDevice))
	r.handle("PUT", "/devices/{deviceId}", modernVersions, s.authed(s.putDevice))
	r.handle("DELETE", "/devices/{deviceId}", modernVersions, s.authed(s.deleteDevice))
	r.handle("POST", "/delete_devices", modernVersions, s.authed(s.postDeleteDevices))
}

// deviceJSON is a device as the devices API shows it; what is not known is null, as in
// Synapse.
type deviceJSON struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name"`
	LastSeenIP  *string `json:"last_seen_ip"`
	LastSeenTS  *int64  `json:"last_seen_ts"`
	UserID      string  `json:"user_id"`
}

func newDeviceJSON(d persist.Device) deviceJSON {
	out := deviceJSON{DeviceID: d.DeviceID, UserID: d.UserID}
	if d.DisplayName != "" {
		out.DisplayName = &d.DisplayName
	}
	if d.LastSeenIP != "" {
		out.LastSeenIP = &d.LastSeenIP
	}
	if d.LastSeenMS > 0 {
		out.LastSeenTS = &d.LastSeenMS
	}
	return out
}

func (s *Server) getDevices(w http.ResponseWriter, r *http.Request, dev Device) {
	devs, err := s.DB.Devices(r.Context(), dev.UserID)
	if err != nil {
		s.internalError(w, r.Pattern, err)
		return
	}
	out := make([]deviceJSON, len(devs))
	for i, d := range devs {
		out[i] = newDeviceJSON(d)
	}
	matrix.WriteJSON(w, http.StatusOK, map[string][]deviceJSON{"devices": out})
}

// errNoDevice answers a device the user does not have, someone else's included.
var errNoDevice = matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "No device found")

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request, dev Device) {
	d, err := s.DB.GetDevice(r.Context(), dev.UserID, r.PathValue("deviceId"))
	if errors.Is(err, persist.ErrNotFound) {
		err = errNoDevice
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, newDeviceJSON(d))
}

// decodeDeviceUpdate reads the body of PUT /devices/{deviceId}: the new display name, or
// nil to keep it. Names are bounded as Synapse bounds them.
func decodeDeviceUpdate(r *http.Request) (*string, error) {
	var body struct {
		DisplayName *string `json:"display_name"`
	}
	if err := matrix.DecodeBody(r, accountBodyLimit, &body); err != nil {
		return nil, err
	}
	if n := body.DisplayName; n != nil && utf8.RuneCountInString(*n) > maxDisplayNameLen {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeTooLarge, "Device display name is too long (max %d)", maxDisplayNameLen)
	}
	return body.DisplayName, nil
}

// putDevice renames a device. Synapse creates an unknown device here only for
// application services; for everyone else, as the spec says, it is 404.
func (s *Server) putDevice(w http.ResponseWriter, r *http.Request, dev Device) {
	name, err := decodeDeviceUpdate(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	// The accounts writer answers an unknown device 404 M_NOT_FOUND.
	_, err = s.writeAccounts(r.Context(), dev, dev.UserID, userstreams.OpRenameDevice,
		userstreams.RenameDevice{Device: r.PathValue("deviceId"), DisplayName: name})
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	// A new display name changes the device as /keys/query shows it
	// (unsigned.device_display_name). The rename has happened either way.
	if err := s.devicesChanged(r.Context(), dev, userstreams.OpDeviceChanged, []string{r.PathValue("deviceId")}); err != nil {
		s.Log.Warn("renamed device not recorded in its device list", zap.String("user_id", dev.UserID), zap.Error(err))
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// deleteDevicesRequest is the body of DELETE /devices/{deviceId} (auth only) and of POST
// /delete_devices.
type deleteDevicesRequest struct {
	Auth    *uiaAuth  `json:"auth"`
	Devices *[]string `json:"devices"`
}

// decodeDeleteDevices reads a deletion's body; it may be left out, as Synapse allows for
// clients that send none before their first auth stage. list says whether the body must
// name the devices (POST /delete_devices).
func decodeDeleteDevices(r *http.Request, list bool) (deleteDevicesRequest, error) {
	var req deleteDevicesRequest
	if err := matrix.DecodeOptionalBody(r, accountBodyLimit, &req); err != nil {
		return req, err
	}
	if list && req.Devices == nil {
		return req, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "devices must be a list of device IDs")
	}
	return req, nil
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request, dev Device) {
	req, err := decodeDeleteDevices(r, false)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	s.deleteDevicesUnderAuth(w, r, dev, req.Auth, []string{r.PathValue("deviceId")})
}

func (s *Server) postDeleteDevices(w http.ResponseWriter, r *http.Request, dev Device) {
	req, err := decodeDeleteDevices(r, true)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	s.deleteDevicesUnderAuth(w, r, dev, req.Auth, *req.Devices)
}

// deleteDevicesUnderAuth deletes devices once the user has given their password again.
// Devices the user does not have are skipped, as Synapse skips them.
func (s *Server) deleteDevicesUnderAuth(w http.ResponseWriter, r *http.Request, dev Device, auth *uiaAuth, ids []string) {
	s.underPassword(w, r, dev, auth, func(ctx context.Context) (any, error) {
		return nil, s.deleteDevices(ctx, dev, ids, false)
	})
}

// deleteDevices deletes devices of dev's user, those named or (all) every one, and
// everything that belongs to them. It is the one way devices go (device deletion,
// logout, logout from all devices), and safe to call again after a failure: the devices
// and their access tokens go first (through the accounts stream; this process stops
// accepting the tokens at once, other gateways within tokenTTL); then their to-device
// inboxes and the transaction ids they sent with, and their end-to-end keys, whose
// deletion the device_lists writer announces to the user's contacts; of every device
// named as well as those deleted, so a retry finishes what a failure left.
func (s *Server) deleteDevices(ctx context.Context, dev Device, ids []string, all bool) error {
	deleted, err := s.removeDevices(ctx, dev.UserID, ids, all)
	if err != nil {
		return err
	}
	ids = slices.Compact(slices.Sorted(slices.Values(slices.Concat(ids, deleted))))
	if err := s.clearToDevice(ctx, dev, ids, 0); err != nil {
		return err
	}
	return s.devicesChanged(ctx, dev, userstreams.OpDeviceDeleted, ids)
}
