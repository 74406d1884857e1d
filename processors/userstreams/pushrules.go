package userstreams

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/jackc/pgx/v5"

	rulesdb "github.com/ganglionhq/ganglion/persist/pushrules"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/schemas/pushrules"
	"github.com/ganglionhq/ganglion/streams"
)

// PushRules is the push_rules stream: one record per change, holding the user's whole
// push rules state after it. The writer applies each change to the latest state (the
// projection's, or the one an earlier write of the batch left), so concurrent changes
// never lose one, and refuses those that cannot apply (a rule that does not exist, a
// before/after rule that is not the user's, an invalid rule) with the spec's errors.
// The body of every operation (pushrules.Op*) is a pushrules.Change.
type PushRules struct {
	Store rulesdb.Store
}

func (*PushRules) Name() string { return schemas.StreamPushRules }

func (p *PushRules) Prepare(ctx context.Context, batch []*schemas.StreamWrite) ([]Outcome, error) {
	out := make([]Outcome, len(batch))
	latest := map[string]pushrules.State{}
	for i, w := range batch {
		var c pushrules.Change
		if err := json.Unmarshal(w.Body, &c); err != nil {
			out[i] = Refuse(http.StatusBadRequest, "M_BAD_JSON", "a push rules change must be an object")
			continue
		}
		cur, ok := latest[w.User]
		if !ok {
			var err error
			if cur, _, err = p.Store.Get(ctx, w.User); err != nil {
				return nil, err
			}
			latest[w.User] = cur
		}
		next, refused := cur.Apply(w.Op, &c)
		if refused != nil {
			out[i] = Refuse(refused.Status, refused.Code, "%s", refused.Message)
			continue
		}
		latest[w.User] = next
		data, err := schemas.Marshal(pushrules.Record{V: pushrules.Version, User: w.User, Rules: next})
		if err != nil {
			return nil, err
		}
		out[i] = Outcome{Records: []Record{{Key: []string{w.User}, Data: data, Wake: []string{w.User}}}}
	}
	return out, nil
}

func (p *PushRules) Project(ctx context.Context, tx pgx.Tx, recs []streams.RawMessage) error {
	decoded := make([]*pushrules.Record, 0, len(recs))
	seqs := make([]uint64, 0, len(recs))
	for _, m := range recs {
		r, err := pushrules.Decode(m.Data)
		if err != nil {
			return err
		}
		decoded = append(decoded, r)
		seqs = append(seqs, m.Seq)
	}
	return rulesdb.Project(ctx, tx, decoded, seqs)
}

func (p *PushRules) Row(m streams.RawMessage) any {
	r, err := pushrules.Decode(m.Data)
	if err != nil {
		return nil
	}
	return pushrules.Row{User: r.User}
}
