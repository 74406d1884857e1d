package client

import (
	"encoding/json"
	"testing"

	"github.com/ganglionhq/ganglion/schemas"
)

func receiptRecord(t *testing.T, room, typ, user, event string) []byte {
	t.Helper()
	data, err := json.Marshal(schemas.ReceiptRecord{V: schemas.ReceiptsVersion, Room: room, Type: typ, User: user, EventID: event, TS: 1})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// RecentReceipts answers only for tokens it covers, keeps the newest receipt per key in
// range, shows private receipts to their owner only, and forgets the oldest.
func TestRecentReceipts(t *testing.T) {
	rr := NewRecentReceipts(3)
	rooms := map[string]bool{"!a:x": true}
	if _, ok := rr.between(0, 10, rooms, "@me:x"); ok {
		t.Fatal("an empty ring cannot answer")
	}
	rr.Observe(5, nil, receiptRecord(t, "!a:x", schemas.ReceiptRead, "@u:x", "$1"))
	rr.Observe(6, nil, receiptRecord(t, "!a:x", schemas.ReceiptRead, "@u:x", "$2"))
	rr.Observe(7, nil, receiptRecord(t, "!a:x", schemas.ReceiptReadPrivate, "@other:x", "$2"))
	if _, ok := rr.between(3, 10, rooms, "@me:x"); ok {
		t.Error("a token before the first record seen must go to Postgres")
	}
	list, ok := rr.between(4, 10, rooms, "@me:x")
	if !ok || len(list) != 1 || list[0].EventID != "$2" || list[0].Pos != 6 {
		t.Errorf("newest per key, private hidden: %+v, %v", list, ok)
	}
	if list, _ := rr.between(4, 10, rooms, "@other:x"); len(list) != 2 {
		t.Errorf("the owner sees their private receipt: %+v", list)
	}
	if list, _ := rr.between(4, 5, rooms, "@me:x"); len(list) != 1 || list[0].EventID != "$1" {
		t.Errorf("bounded by to: %+v", list)
	}
	if list, _ := rr.between(4, 10, map[string]bool{"!b:x": true}, "@me:x"); len(list) != 0 {
		t.Errorf("other rooms: %+v", list)
	}
	rr.Observe(8, nil, receiptRecord(t, "!a:x", schemas.ReceiptRead, "@v:x", "$3"))
	if _, ok := rr.between(4, 10, rooms, "@me:x"); ok {
		t.Error("record 5 was forgotten: a token before it must go to Postgres")
	}
	if list, ok := rr.between(5, 10, rooms, "@me:x"); !ok || len(list) != 2 {
		t.Errorf("after eviction: %+v, %v", list, ok)
	}
}
