package client

import (
	"context"
	"encoding/json"

	"github.com/ganglionhq/ganglion/gateway/matrix"
)

// accountDataStream is the account_data stream's part of /sync: global values in the
// top-level account_data, room values (tags as m.tag) in their joined room's.
type accountDataStream struct {
	feedStream
	store accountDataStore
}

func (a *accountDataStream) fill(ctx context.Context, sc *syncCtx, since, to uint64) error {
	if !a.changed(sc, since) {
		return nil
	}
	items, err := a.store.Changed(ctx, sc.dev.UserID, since, to)
	if err != nil {
		return err
	}
	joined := make(map[string]bool, len(sc.joined))
	for _, r := range sc.joined {
		joined[r] = true
	}
	for _, it := range items {
		ev, err := matrix.Marshal(struct {
			Type    string          `json:"type"`
			Content json.RawMessage `json:"content"`
		}{it.Type, it.Content})
		if err != nil {
			return err
		}
		switch {
		case it.Room == "":
			sc.res.AccountData.Events = append(sc.res.AccountData.Events, ev)
		case joined[it.Room]:
			jr := sc.joinedRoom(it.Room)
			jr.AccountData.Events = append(jr.AccountData.Events, ev)
		}
	}
	return nil
}
