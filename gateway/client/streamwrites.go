package client

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/schemas"
)

// streamWrite is one write to a per-user stream, as an endpoint asks for it.
type streamWrite struct {
	stream, op string
	// key chooses the writer (the user for streams sharded by user, the room for
	// those sharded by room); wake is whom the write concerns in the stream's feed,
	// for read-your-writes (the key when empty).
	key, wake string
	// id makes the write idempotent (a transaction id's); random when empty.
	id string
	// unseenBySender marks a write that shows nothing in the requester's own /sync (a
	// to-device message goes to other devices), so its next /sync waits for nothing.
	unseenBySender bool
	body           any
}

// writeStream forwards a write to its stream's writer, the same path an event takes,
// and returns the writer's answer. Once it returns, the device's next /sync here shows
// the write.
func (s *Server) writeStream(ctx context.Context, dev Device, sw streamWrite) (*schemas.IntentResult, error) {
	body, err := schemas.Marshal(sw.body)
	if err != nil {
		return nil, err
	}
	w := &schemas.StreamWrite{V: schemas.StreamWriteVersion, ID: sw.id, Stream: sw.stream, Op: sw.op, Key: sw.key,
		User: dev.UserID, Device: dev.DeviceID, IssuedAtMS: time.Now().UnixMilli(), Body: body}
	if w.ID == "" {
		w.ID = randomIntentID()
	}
	if err := w.Validate(); err != nil {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "%s", err.Error())
	}
	res, err := s.Intents.Write(ctx, w)
	if err := s.answerError(res, err, zap.String("stream", sw.stream)); err != nil {
		return nil, err
	}
	if o := s.streamWrites[sw.stream]; o != nil && res.Seq > 0 && !sw.unseenBySender {
		wake := sw.wake
		if wake == "" {
			wake = sw.key
		}
		o.record(dev, wake, res.Seq, s.StreamFeeds[sw.stream].Position())
	}
	return res, nil
}
