package userstreams

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/jackc/pgx/v5"

	"github.com/ganglionhq/ganglion/persist/accountdata"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// Operations of the account_data stream.
const (
	// OpAccountDataPut sets one value: AccountDataPut.
	OpAccountDataPut = "put"
	// OpTagPut and OpTagDelete change one tag of a room: TagChange.
	OpTagPut    = "tag_put"
	OpTagDelete = "tag_delete"
)

// AccountDataPut is the body of OpAccountDataPut; Room is empty for global data.
type AccountDataPut struct {
	Room    string          `json:"room,omitempty"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// TagChange is the body of OpTagPut and OpTagDelete; Content is the tag's object
// ({"order": 0.5}) for a put.
type TagChange struct {
	Room    string          `json:"room"`
	Tag     string          `json:"tag"`
	Content json.RawMessage `json:"content,omitempty"`
}

// TagType is the account data type holding a room's tags.
const TagType = "m.tag"

// AccountData is the account_data stream: global and per-room account data, and room
// tags as the m.tag value of their room. The gateway has checked who may write what;
// the writer checks the shape, and keeps tags consistent by changing one tag of the
// latest m.tag value at a time.
type AccountData struct {
	Store accountdata.Store
}

func (*AccountData) Name() string { return schemas.StreamAccountData }

func (a *AccountData) Prepare(ctx context.Context, batch []*schemas.StreamWrite) ([]Outcome, error) {
	out := make([]Outcome, len(batch))
	// The m.tag values as this batch leaves them, so two tag changes of one batch
	// both survive.
	tags := map[[2]string]map[string]json.RawMessage{}
	for i, w := range batch {
		switch w.Op {
		case OpAccountDataPut:
			var body AccountDataPut
			if err := json.Unmarshal(w.Body, &body); err != nil || body.Type == "" || !schemas.IsObject(body.Content) {
				out[i] = Refuse(http.StatusBadRequest, "M_BAD_JSON", "account data needs a type and an object")
				continue
			}
			if body.Type == TagType && body.Room != "" {
				// Tags change through their own operations; a whole m.tag value
				// replaces this batch's view of them too.
				var t struct {
					Tags map[string]json.RawMessage `json:"tags"`
				}
				_ = json.Unmarshal(body.Content, &t)
				tags[[2]string{w.User, body.Room}] = t.Tags
			}
			out[i] = a.record(w.User, body.Room, body.Type, body.Content)
		case OpTagPut, OpTagDelete:
			var body TagChange
			if err := json.Unmarshal(w.Body, &body); err != nil || body.Room == "" || body.Tag == "" ||
				(w.Op == OpTagPut && !schemas.IsObject(body.Content)) {
				out[i] = Refuse(http.StatusBadRequest, "M_BAD_JSON", "a tag needs a room, a name and an object")
				continue
			}
			key := [2]string{w.User, body.Room}
			cur, ok := tags[key]
			if !ok {
				var err error
				if cur, err = a.currentTags(ctx, w.User, body.Room); err != nil {
					return nil, err
				}
			}
			next := make(map[string]json.RawMessage, len(cur)+1)
			for k, v := range cur {
				next[k] = v
			}
			if w.Op == OpTagPut {
				next[body.Tag] = body.Content
			} else {
				delete(next, body.Tag)
			}
			tags[key] = next
			content, err := json.Marshal(map[string]any{"tags": next})
			if err != nil {
				return nil, err
			}
			out[i] = a.record(w.User, body.Room, TagType, content)
		default:
			out[i] = Refuse(http.StatusBadRequest, "M_UNRECOGNIZED", "unknown account data operation %q", w.Op)
		}
	}
	return out, nil
}

func (a *AccountData) currentTags(ctx context.Context, user, room string) (map[string]json.RawMessage, error) {
	raw, err := a.Store.Get(ctx, user, room, TagType)
	if errors.Is(err, accountdata.ErrNotFound) {
		return map[string]json.RawMessage{}, nil
	}
	if err != nil {
		return nil, err
	}
	var t struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	if err := json.Unmarshal(raw, &t); err != nil || t.Tags == nil {
		return map[string]json.RawMessage{}, nil
	}
	return t.Tags, nil
}

func (a *AccountData) record(user, room, typ string, content json.RawMessage) Outcome {
	data, _ := schemas.Marshal(schemas.AccountDataRecord{V: schemas.AccountDataVersion, User: user, Room: room, Type: typ, Content: content})
	return Outcome{Records: []Record{{Key: []string{user, room, typ}, Data: data, Wake: []string{user}}}}
}

func (a *AccountData) Project(ctx context.Context, tx pgx.Tx, recs []streams.RawMessage) error {
	decoded := make([]*schemas.AccountDataRecord, 0, len(recs))
	seqs := make([]uint64, 0, len(recs))
	for _, m := range recs {
		r, err := schemas.DecodeAccountData(m.Data)
		if err != nil {
			return err
		}
		decoded = append(decoded, r)
		seqs = append(seqs, m.Seq)
	}
	return accountdata.Project(ctx, tx, decoded, seqs)
}

func (a *AccountData) Row(m streams.RawMessage) any {
	r, err := schemas.DecodeAccountData(m.Data)
	if err != nil {
		return nil
	}
	return schemas.AccountDataRow{User: r.User, Room: r.Room, Type: r.Type}
}
