package client

import (
	"context"

	"github.com/ganglionhq/ganglion/gateway/matrix"
)

// pushRulesStream is the push_rules stream's part of /sync: the user's whole ruleset
// as the global account data event m.push_rules (where Element and other clients read
// push rules), on an initial or full-state sync and whenever it changed after the
// token, as Synapse sends it.
type pushRulesStream struct {
	feedStream
	store pushRulesStore
}

func (p *pushRulesStream) fill(ctx context.Context, sc *syncCtx, since, to uint64) error {
	all := !sc.req.incremental || sc.req.fullState
	if !all && !p.changed(sc, since) {
		return nil
	}
	state, pos, err := p.store.Get(ctx, sc.dev.UserID)
	if err != nil {
		return err
	}
	// A change past to is not visible yet; the sync after this one shows it.
	if !all && (pos <= since || pos > to) {
		return nil
	}
	ev, err := matrix.Marshal(struct {
		Type    string           `json:"type"`
		Content pushRulesContent `json:"content"`
	}{pushRulesType, pushRulesContent{Global: state.Format(sc.dev.UserID)}})
	if err != nil {
		return err
	}
	sc.res.AccountData.Events = append(sc.res.AccountData.Events, ev)
	return nil
}
