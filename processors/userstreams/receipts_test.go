package userstreams

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ganglionhq/ganglion/persist/receipts"
	"github.com/ganglionhq/ganglion/processors/syncfeed"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

func receipt(typ, event string, seq uint64, idx int, thread string) ReceiptPut {
	return ReceiptPut{Receipts: []ReceiptWrite{{Type: typ, EventID: event, EventSeq: seq, EventIdx: idx, Thread: thread}}}
}

// TestReceiptsMoveForwardOnly: a receipt for an event at or before the current one's is
// ignored (Synapse does the same), per receipt type and thread; what is kept is in
// Postgres, with Synapse's replication row.
func TestReceiptsMoveForwardOnly(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, map[string][]string{schemas.StreamReceipts: {"w1"}})
	st := &Receipts{Store: receipts.Store{Pool: fx.db.Pool}}
	fx.runWriter("w1", st)
	const room, user = "!room:t", "@alice:t"
	put := func(body ReceiptPut) uint64 {
		return fx.write(schemas.StreamReceipts, OpReceiptPut, room, user, body).Seq
	}
	if put(receipt(schemas.ReceiptRead, "$e5", 5, 0, "")) == 0 {
		t.Fatal("first receipt appended nothing")
	}
	for _, older := range []ReceiptPut{receipt(schemas.ReceiptRead, "$e3", 3, 0, ""), receipt(schemas.ReceiptRead, "$e5", 5, 0, "")} {
		if seq := put(older); seq != 0 {
			t.Errorf("receipt %+v not ahead of $e5 was appended at %d", older, seq)
		}
	}
	// Other types and threads have receipts of their own.
	if put(receipt(schemas.ReceiptReadPrivate, "$e3", 3, 0, "")) == 0 || put(receipt(schemas.ReceiptRead, "$e3", 3, 0, "main")) == 0 {
		t.Error("receipts of another type or thread were held back by the unthreaded m.read")
	}
	last := put(receipt(schemas.ReceiptRead, "$e6", 5, 1, ""))
	if last == 0 {
		t.Fatal("a receipt for a later event of the same log message was ignored")
	}

	got, err := st.Store.Changed(context.Background(), user, []string{room}, 0, nil, last)
	if err != nil {
		t.Fatal(err)
	}
	want := map[receipts.Key]string{
		{Room: room, Type: schemas.ReceiptRead, User: user}:                 "$e6",
		{Room: room, Type: schemas.ReceiptReadPrivate, User: user}:          "$e3",
		{Room: room, Type: schemas.ReceiptRead, User: user, Thread: "main"}: "$e3",
	}
	if len(got) != len(want) {
		t.Fatalf("stored receipts %+v, want %v", got, want)
	}
	for _, r := range got {
		if want[r.Key] != r.EventID || r.TS == 0 {
			t.Errorf("stored %+v, want event %s", r, want[r.Key])
		}
	}
	// Someone else does not see the private one.
	others, err := st.Store.Changed(context.Background(), "@bob:t", []string{room}, 0, nil, last)
	if err != nil || len(others) != 2 {
		t.Errorf("bob sees %+v, %v", others, err)
	}

	// The replication row of the last record, as Synapse writes it.
	m, err := fx.env.JS.Stream(context.Background(), fx.env.Topology.UserStreamName(schemas.StreamReceipts))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := m.GetMsg(context.Background(), last)
	if err != nil {
		t.Fatal(err)
	}
	row, err := schemas.EncodeJSON(st.Row(streams.RawMessage{Seq: last, Data: raw.Data}))
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := schemas.DecodeReceipt(raw.Data)
	if want := fmt.Sprintf(`["!room:t","m.read","@alice:t","$e6",null,{"ts":%d}]`, rec.TS); string(row) != want {
		t.Errorf("row %s, want %s", row, want)
	}
}

// slowStream delays every projection of its stream, as a writer on a loaded machine.
type slowStream struct {
	Stream
	maxDelay time.Duration
}

func (s slowStream) Project(ctx context.Context, tx pgx.Tx, recs []streams.RawMessage) error {
	time.Sleep(time.Duration(rand.Int64N(int64(s.maxDelay))))
	return s.Stream.Project(ctx, tx, recs)
}

// TestReceiptsNoGapWithSlowWriter is the gap-free rule for a multi-writer stream (issue
// acceptance 5): two receipts writers share the stream, one projecting slowly. While
// receipts are written to rooms of both, the sync feed's visible position never passes
// a record that is not yet in Postgres, and a reader going from position to position,
// as /sync does, sees every receipt exactly once.
func TestReceiptsNoGapWithSlowWriter(t *testing.T) {
	t.Parallel()
	writers := []string{"fast", "slow"}
	fx := newFixture(t, map[string][]string{schemas.StreamReceipts: writers})
	store := receipts.Store{Pool: fx.db.Pool}
	fx.runWriter("fast", &Receipts{Store: store})
	fx.runWriter("slow", slowStream{Stream: &Receipts{Store: store}, maxDelay: 60 * time.Millisecond})

	feed, err := syncfeed.New(context.Background(), syncfeed.Config{JS: fx.env.JS, NC: fx.env.NC, Topology: fx.env.Topology,
		DB: fx.db, Stream: schemas.StreamReceipts, Writers: writers, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	feedDone := make(chan struct{})
	go func() { defer close(feedDone); _ = feed.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-feedDone })

	// Rooms on both shards.
	var rooms []string
	perWriter := map[string]int{}
	for i := 0; len(rooms) < 12; i++ {
		room := fmt.Sprintf("!room%d:t", i)
		if w := streams.ShardOwner(room, writers); perWriter[w] < 6 {
			perWriter[w]++
			rooms = append(rooms, room)
		}
	}
	// Every receipt has a key of its own, so none replaces another.
	const senders, perSender = 4, 40
	want := map[receipts.Key]string{}
	for s := range senders {
		for i := range perSender {
			k := receipts.Key{Room: rooms[(s*perSender+i)%len(rooms)], Type: schemas.ReceiptRead, User: fmt.Sprintf("@u%d-%d:t", s, i)}
			want[k] = fmt.Sprintf("$e%d-%d", s, i)
		}
	}

	stream, err := fx.env.JS.Stream(ctx, fx.env.Topology.UserStreamName(schemas.StreamReceipts))
	if err != nil {
		t.Fatal(err)
	}
	written := make(chan struct{})
	var checks sync.WaitGroup
	// The invariant, checked again and again while receipts are written: every record
	// up to the visible position is in Postgres.
	heldBack := 0
	checks.Go(func() {
		var checked uint64
		for done := false; !done; {
			select {
			case <-written:
				done = true
			default:
			}
			pos := feed.Position()
			for seq := checked + 1; seq <= pos; seq++ {
				m, err := stream.GetMsg(ctx, seq)
				if err != nil {
					t.Errorf("record %d: %v", seq, err)
					return
				}
				r, err := schemas.DecodeReceipt(m.Data)
				if err != nil {
					t.Errorf("record %d: %v", seq, err)
					return
				}
				var stored int64
				err = fx.db.Pool.QueryRow(ctx, `SELECT stream_id FROM receipts
					WHERE room_id = $1 AND receipt_type = $2 AND user_id = $3 AND thread_id = $4`, r.Room, r.Type, r.User, r.Thread).Scan(&stored)
				if err != nil || uint64(stored) < seq {
					t.Errorf("visible position %d passed record %d (writer %s), which is not in Postgres (%d, %v)",
						pos, seq, m.Header.Get(streams.HeaderWriter), stored, err)
					return
				}
			}
			checked = max(checked, pos)
			// Projected but not visible yet: the slow writer holds the position back.
			var ahead int
			if err := fx.db.Pool.QueryRow(ctx, `SELECT count(*) FROM receipts WHERE stream_id > $1`, int64(pos)).Scan(&ahead); err == nil && ahead > 0 {
				heldBack++
			}
			time.Sleep(time.Millisecond)
		}
	})
	// A reader stepping from position to position, as a client's /syncs do.
	seen := map[receipts.Key]int{}
	checks.Go(func() {
		var since uint64
		var deadline time.Time
		for {
			finished := false
			select {
			case <-written:
				finished = true
				if deadline.IsZero() {
					deadline = time.Now().Add(20 * time.Second)
				}
			default:
			}
			to := feed.Position()
			got, err := store.Changed(ctx, "@reader:t", rooms, since, nil, to)
			if err != nil {
				t.Error(err)
				return
			}
			for _, r := range got {
				if r.Pos <= since || r.Pos > to {
					t.Errorf("receipt %+v outside (%d, %d]", r, since, to)
				}
				seen[r.Key]++
				if want[r.Key] != r.EventID {
					t.Errorf("receipt %+v, want event %s", r, want[r.Key])
				}
			}
			since = to
			if finished && len(seen) == len(want) {
				return
			}
			if finished && time.Now().After(deadline) {
				t.Errorf("the reader saw %d of %d receipts", len(seen), len(want))
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	})

	var sends sync.WaitGroup
	for s := range senders {
		sends.Go(func() {
			for i := range perSender {
				k := receipts.Key{Room: rooms[(s*perSender+i)%len(rooms)], Type: schemas.ReceiptRead, User: fmt.Sprintf("@u%d-%d:t", s, i)}
				fx.write(schemas.StreamReceipts, OpReceiptPut, k.Room, k.User, receipt(k.Type, want[k], uint64(i+1), 0, ""))
			}
		})
	}
	sends.Wait()
	close(written)
	checks.Wait()
	for k, n := range seen {
		if n != 1 {
			t.Errorf("receipt %v seen %d times", k, n)
		}
	}
	if heldBack == 0 {
		t.Error("the slow writer never held the position back: the test proved nothing")
	}
	t.Logf("%d receipts; the slow writer held the position back at %d checks", len(want), heldBack)
}

// TestReceiptsLostCommitsProjectedAgain: a receipt's projection and the writer's
// position go in one round trip (Queuer), without waiting for the WAL flush. When
// Postgres comes back without the last commits, the writer finds its stored position
// behind its own and projects the lost receipts again from the log; the next receipt's
// projection does not move the position over them.
func TestReceiptsLostCommitsProjectedAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fx := newFixture(t, map[string][]string{schemas.StreamReceipts: {"w1"}})
	st := &Receipts{Store: receipts.Store{Pool: fx.db.Pool}}
	fx.runWriter("w1", st)
	const room = "!room:t"
	put := func(user string, seq uint64) uint64 {
		return fx.write(schemas.StreamReceipts, OpReceiptPut, room, user, receipt(schemas.ReceiptRead, fmt.Sprint("$e", seq), seq, 0, "")).Seq
	}
	stored := func() map[string]string {
		got, err := st.Store.Changed(ctx, "@x:t", []string{room}, 0, nil, 1<<40)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, r := range got {
			out[r.User] = r.EventID
		}
		return out
	}
	put("@a:t", 1)
	exec := func(q string) {
		t.Helper()
		if _, err := fx.db.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`CREATE TABLE lost_receipts AS SELECT * FROM receipts`)
	exec(`CREATE TABLE lost_positions AS SELECT * FROM stream_positions`)
	put("@b:t", 2)
	put("@a:t", 3)
	// Postgres comes back without the last two commits.
	exec(`BEGIN; DELETE FROM receipts; INSERT INTO receipts SELECT * FROM lost_receipts;
		DELETE FROM stream_positions; INSERT INTO stream_positions SELECT * FROM lost_positions; COMMIT`)
	if got := stored(); len(got) != 1 {
		t.Fatalf("receipts after the loss: %v", got)
	}
	put("@c:t", 4) // its commit must not carry the position over the lost ones
	eventually(t, "the lost receipts projected again", func() bool {
		got := stored()
		return got["@a:t"] == "$e3" && got["@b:t"] == "$e2" && got["@c:t"] == "$e4"
	})
}
