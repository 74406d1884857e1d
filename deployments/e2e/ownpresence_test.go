package e2e

import (
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/pushrules"
)

// TestOwnPresenceBeforeTheToken: a device's first /sync brings its user online, and
// the change lands before that sync's token, as with Synapse: the next long-poll is
// woken by what comes next (here a push rule), not by the user's own presence.
func TestOwnPresenceBeforeTheToken(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	first, err := alice.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	done := longPoll(ctx, t, alice, 10000, first.NextBatch, "", false, "")
	if err := alice.PutPushRule(ctx, "global", pushrules.ContentRule, "lunch",
		&mautrix.ReqPutPushRule{Pattern: "lunch", Actions: []*pushrules.PushAction{{Action: pushrules.ActionNotify}}}); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r == nil {
		t.FailNow()
	}
	var rules bool
	for _, ev := range r.AccountData.Events {
		rules = rules || ev.Type.Type == "m.push_rules"
	}
	if !rules {
		t.Errorf("the long-poll after the first sync: %d presence events, no m.push_rules", len(r.Presence.Events))
	}
}
