package userstreams

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// toDeviceEnv is to_device writers, and an accounts writer for the users and devices,
// on a test's own bus and database.
type toDeviceEnv struct {
	*fixture
	// stream is the first writer's, for its store and rows.
	stream  *ToDevice
	writers []*Writer
	logs    *observer.ObservedLogs
}

// newToDeviceEnv starts writers (one called master when none are named) whose devices
// hold at most limit messages (0: the default).
func newToDeviceEnv(t testing.TB, limit int64, writers ...string) *toDeviceEnv {
	t.Helper()
	return newToDeviceEnvWith(t, limit, func(st *ToDevice) Stream { return st }, writers...)
}

// newToDeviceEnvWith is newToDeviceEnv with each writer's stream made by wrap.
func newToDeviceEnvWith(t testing.TB, limit int64, wrap func(*ToDevice) Stream, writers ...string) *toDeviceEnv {
	t.Helper()
	if len(writers) == 0 {
		writers = []string{"master"}
	}
	fx := newFixture(t, map[string][]string{schemas.StreamToDevice: writers, schemas.StreamAccounts: {"master"}})
	if limit > 0 {
		fx.env.Topology.ToDevicePerDevice = limit
		if err := fx.env.Topology.Ensure(context.Background(), fx.env.JS); err != nil {
			t.Fatal(err)
		}
	}
	core, logs := observer.New(zap.WarnLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	deps := Deps{DB: fx.db, JS: fx.env.JS, Topology: fx.env.Topology, Log: log}
	e := &toDeviceEnv{fixture: fx, logs: logs}
	fx.runWriter("master", Streams(deps)[schemas.StreamAccounts])
	for _, name := range writers {
		st := Streams(deps)[schemas.StreamToDevice].(*ToDevice)
		if e.stream == nil {
			e.stream = st
		}
		w, _ := fx.runWriter(name, wrap(st))
		e.writers = append(e.writers, w)
	}
	return e
}

// settle waits until the writers projected every record of the writes they answered
// (they answer at the append), as a client's /sync waits for projected positions.
func (e *toDeviceEnv) settle() {
	for _, w := range e.writers {
		w.flush(context.Background())
	}
}

// user registers a user with devices, through the accounts stream.
func (e *toDeviceEnv) user(id string, devices ...string) {
	e.t.Helper()
	e.fixture.write(schemas.StreamAccounts, OpRegister, id, id, Register{})
	for _, d := range devices {
		e.fixture.write(schemas.StreamAccounts, OpLogin, id, id, device(d, id+d))
	}
}

// write sends one write of the to_device stream by user's device and returns the
// writer's answer, a refusal included.
func (e *toDeviceEnv) write(op, user, device string, body any) *schemas.IntentResult {
	e.t.Helper()
	raw, _ := json.Marshal(body)
	res, err := e.client.Write(context.Background(), &schemas.StreamWrite{V: schemas.StreamWriteVersion, ID: nats.NewInbox()[len(nats.InboxPrefix):],
		Stream: schemas.StreamToDevice, Op: op, Key: user, User: user, Device: device, Body: raw})
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

func (e *toDeviceEnv) send(sender, device, txn string, messages map[string]map[string]any) *schemas.IntentResult {
	e.t.Helper()
	raw := map[string]map[string]json.RawMessage{}
	for u, byDevice := range messages {
		raw[u] = map[string]json.RawMessage{}
		for d, c := range byDevice {
			raw[u][d], _ = json.Marshal(c)
		}
	}
	res := e.write(OpToDeviceSend, sender, device, ToDeviceSend{Type: "m.test", Txn: txn, Messages: raw})
	if res.Error != nil {
		e.t.Fatalf("send %s refused: %+v", txn, res.Error)
	}
	return res
}

// inbox is what a device's inbox holds, in order: each message's content "n".
func (e *toDeviceEnv) inbox(user, device string) []any {
	e.t.Helper()
	e.settle()
	msgs, _, err := e.stream.Store.Inbox(context.Background(), user, device, 0, 1<<62, 100000, 1<<30)
	if err != nil {
		e.t.Fatal(err)
	}
	out := []any{}
	for _, m := range msgs {
		var v struct {
			Type, Sender string
			Content      map[string]any
		}
		if err := json.Unmarshal(m.JSON, &v); err != nil || v.Type != "m.test" || v.Sender == "" {
			e.t.Fatalf("stored message %s: %v", m.JSON, err)
		}
		out = append(out, v.Content["n"])
	}
	return out
}

// subject counts the messages the log holds on one subject of the stream.
func (e *toDeviceEnv) subject(key ...string) uint64 {
	e.t.Helper()
	topo := e.env.Topology
	subj := topo.UserStreamSubject(schemas.StreamToDevice, key...)
	st, err := e.env.JS.Stream(context.Background(), topo.UserStreamName(schemas.StreamToDevice))
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(subj))
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Subjects[subj]
}

func wantInbox(t *testing.T, e *toDeviceEnv, user, device string, want ...any) {
	t.Helper()
	if want == nil {
		want = []any{}
	}
	if got := e.inbox(user, device); !reflect.DeepEqual(got, want) {
		t.Errorf("inbox of %s %s = %v, want %v", user, device, got, want)
	}
	if n := e.subject(user, device); n != uint64(len(want)) {
		t.Errorf("subject of %s %s holds %d messages, want %d", user, device, n, len(want))
	}
}

const carol = "@carol:test"

// TestToDeviceDelivery: messages reach the devices named, every device for "*", and
// nobody else; unknown users and devices are skipped; a transaction id delivers once,
// whether its retry comes in the same batch or later.
func TestToDeviceDelivery(t *testing.T) {
	t.Parallel()
	e := newToDeviceEnv(t, 0)
	e.user(alice, "A1", "A2")
	e.user(bob, "B1", "B2")
	e.user(carol, "C1", "C2")

	e.send(alice, "A1", "t1", map[string]map[string]any{
		bob:              {"B1": map[string]any{"n": 1.0}, "NOPE": map[string]any{"n": 99.0}},
		carol:            {"*": map[string]any{"n": 2.0}},
		"@nobody:test":   {"*": map[string]any{"n": 99.0}},
		"@remote:remote": {"X": map[string]any{"n": 99.0}},
	})
	wantInbox(t, e, bob, "B1", 1.0)
	wantInbox(t, e, bob, "B2")
	wantInbox(t, e, carol, "C1", 2.0)
	wantInbox(t, e, carol, "C2", 2.0)
	// "*" beside named devices names no device, as in Synapse.
	e.send(alice, "A1", "t2", map[string]map[string]any{bob: {"*": map[string]any{"n": 99.0}, "B2": map[string]any{"n": 3.0}}})
	wantInbox(t, e, bob, "B1", 1.0)
	wantInbox(t, e, bob, "B2", 3.0)

	// A retry long after (another write id, past the log's deduplication): nothing.
	e.send(alice, "A1", "t1", map[string]map[string]any{bob: {"B1": map[string]any{"n": 99.0}}})
	// The same transaction id from another device is another transaction.
	e.send(alice, "A2", "t1", map[string]map[string]any{bob: {"B1": map[string]any{"n": 4.0}}})
	wantInbox(t, e, bob, "B1", 1.0, 4.0)

	// Copies of one transaction in one batch, under several write ids: one delivery.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			e.send(alice, "A1", "t3", map[string]map[string]any{bob: {"B2": map[string]any{"n": 5.0}}})
		})
	}
	wg.Wait()
	wantInbox(t, e, bob, "B2", 3.0, 5.0)

	// The replication rows name the recipient; transaction records have none.
	var rows []any
	st, _ := e.env.JS.Stream(context.Background(), e.env.Topology.UserStreamName(schemas.StreamToDevice))
	info, _ := st.Info(context.Background())
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(context.Background(), seq)
		if err != nil {
			continue
		}
		if row := e.stream.Row(streams.RawMessage{Seq: seq, Data: m.Data}); row != nil {
			raw, _ := json.Marshal(row)
			rows = append(rows, string(raw))
		}
	}
	if len(rows) != 6 || rows[0] != `["`+bob+`"]` || rows[1] != `["`+carol+`"]` {
		t.Errorf("replication rows %v", rows)
	}

	// Refusals: a body the stream cannot read, an operation it does not know.
	if res := e.write(OpToDeviceSend, alice, "A1", map[string]any{"type": "m.test"}); res.Error == nil || res.Error.Code != "M_BAD_JSON" {
		t.Errorf("send without a transaction id: %+v", res.Error)
	}
	if res := e.write("nope", alice, "A1", map[string]any{}); res.Error == nil || res.Error.Code != "M_UNRECOGNIZED" {
		t.Errorf("unknown operation: %+v", res.Error)
	}
}

// TestToDeviceDeletion: a deletion up to a position purges the device's subject and
// deletes its rows up to there, no further; a deletion of gone devices takes everything,
// their transaction ids too; a replay rebuilds the same tables.
func TestToDeviceDeletion(t *testing.T) {
	t.Parallel()
	e := newToDeviceEnv(t, 0)
	e.user(alice, "A1")
	e.user(bob, "B1", "B2")
	var seqs []uint64
	for i := range 4 {
		res := e.send(alice, "A1", fmt.Sprintf("t%d", i), map[string]map[string]any{bob: {"*": map[string]any{"n": float64(i)}}})
		seqs = append(seqs, res.Seq)
	}
	// Each send's last record is its transaction id: the messages come before it. A
	// device deletes up to a position it synced past, so projected.
	e.settle()
	res := e.write(OpToDeviceDelete, bob, "B1", ToDeviceDelete{Devices: []string{"B1"}, UpTo: seqs[1] - 1})
	if res.Error != nil {
		t.Fatal(res.Error)
	}
	wantInbox(t, e, bob, "B1", 2.0, 3.0)
	wantInbox(t, e, bob, "B2", 0.0, 1.0, 2.0, 3.0)

	pending, err := e.stream.Store.Pending(context.Background(), bob, []string{"B1", "B2", "NOPE"}, seqs[1]-1)
	if err != nil || !reflect.DeepEqual(pending, []string{"B2"}) {
		t.Errorf("pending up to the second send = %v, %v", pending, err)
	}

	// Alice's device goes: its transaction ids go with it, so the ids may be used again.
	if n := e.subject(alice, "A1", txnKey); n != 4 {
		t.Errorf("transaction subject holds %d, want 4", n)
	}
	e.write(OpToDeviceDelete, alice, "A1", ToDeviceDelete{Devices: []string{"A1"}})
	if n := e.subject(alice, "A1", txnKey); n != 0 {
		t.Errorf("transaction subject of a deleted device holds %d", n)
	}
	e.send(alice, "A1", "t0", map[string]map[string]any{bob: {"B1": map[string]any{"n": 4.0}}})
	wantInbox(t, e, bob, "B1", 2.0, 3.0, 4.0)

	// Replay into an empty database gives the same rows.
	e.settle()
	fresh, err := persist.Open(context.Background(), pgtest.DSN(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fresh.Close)
	if _, _, err := Replay(context.Background(), e.env.JS, e.env.Topology, fresh, e.stream); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"SELECT user_id, device_id, stream_id, message FROM device_inbox ORDER BY 1, 2, 3",
		"SELECT sender, device_id, txn_id, stream_id FROM to_device_txns ORDER BY 1, 2, 3",
		"SELECT user_id, device_id, messages, txns FROM to_device_sizes ORDER BY 1, 2",
	} {
		if a, b := dump(t, e.db, q), dump(t, fresh, q); !reflect.DeepEqual(a, b) {
			t.Errorf("%s\noriginal %v\nreplayed %v", q, a, b)
		}
	}
}

func dump(t *testing.T, db *persist.DB, q string) [][]any {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestToDeviceTwoWriters: with two writers, each sender's writes go to its own writer
// (so one writer sees all of a device's transaction ids) and a deletion to the
// recipient's; messages from both reach one device in the order they were sent, and a
// deletion by the other writer purges what either appended.
func TestToDeviceTwoWriters(t *testing.T) {
	t.Parallel()
	writers := []string{"w1", "w2"}
	e := newToDeviceEnv(t, 0, writers...)
	// Senders on each writer, and a recipient.
	var senders []string
	owners := map[string]bool{}
	for i := 0; len(owners) < 2 || len(senders) < 4; i++ {
		u := fmt.Sprintf("@s%d:test", i)
		senders = append(senders, u)
		owners[streams.ShardOwner(u, writers)] = true
	}
	for _, u := range senders {
		e.user(u, "D")
	}
	e.user(bob, "B1")
	var want []any
	var last uint64
	for i := range 20 {
		sender := senders[i%len(senders)]
		res := e.send(sender, "D", fmt.Sprint(i), map[string]map[string]any{bob: {"B1": map[string]any{"n": float64(i)}}})
		want = append(want, float64(i))
		last = max(last, res.Seq)
		// A retry, through the same writer: nothing more.
		e.send(sender, "D", fmt.Sprint(i), map[string]map[string]any{bob: {"B1": map[string]any{"n": -1.0}}})
	}
	wantInbox(t, e, bob, "B1", want...)
	if res := e.write(OpToDeviceDelete, bob, "B1", ToDeviceDelete{Devices: []string{"B1"}, UpTo: last}); res.Error != nil {
		t.Fatal(res.Error)
	}
	wantInbox(t, e, bob, "B1")
}

// TestToDeviceBound: a device that never syncs holds the newest messages up to the
// bound, in the log and in Postgres, and the drop is logged; so are a sending device's
// transaction ids.
func TestToDeviceBound(t *testing.T) {
	t.Parallel()
	e := newToDeviceEnv(t, 3)
	e.user(alice, "A1")
	e.user(bob, "B1")
	for i := range 5 {
		e.send(alice, "A1", fmt.Sprintf("t%d", i), map[string]map[string]any{bob: {"B1": map[string]any{"n": float64(i)}}})
	}
	wantInbox(t, e, bob, "B1", 2.0, 3.0, 4.0)
	if n := e.subject(alice, "A1", txnKey); n != 3 {
		t.Errorf("transaction subject holds %d, want 3", n)
	}
	var txns int
	e.settle()
	if err := e.db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM to_device_txns").Scan(&txns); err != nil || txns != 3 {
		t.Errorf("%d transaction rows, %v", txns, err)
	}
	if sizes := dump(t, e.db, "SELECT user_id, device_id, messages, txns FROM to_device_sizes ORDER BY 1"); fmt.Sprint(sizes) !=
		fmt.Sprintf("[[%s A1 0 3] [%s B1 3 0]]", alice, bob) {
		t.Errorf("sizes %v", sizes)
	}
	// Projections that run together log their drops together.
	dropped := int64(0)
	for _, l := range e.logs.FilterMessageSnippet("dropped its oldest").FilterField(zap.String("device_id", "B1")).All() {
		dropped += l.ContextMap()["dropped"].(int64)
	}
	if dropped != 2 {
		t.Errorf("%d drops logged, want 2", dropped)
	}
}

// BenchmarkToDeviceWriter measures the writer path as /sendToDevice requests of many
// clients reach it: 256 concurrent senders, each write carrying one message (a single
// key request) or 20 (a room key shared with a room's devices); the writer batches
// them. Reported as messages per second.
func BenchmarkToDeviceWriter(b *testing.B) {
	for _, fanout := range []int{1, 20} {
		b.Run(fmt.Sprintf("fanout=%d", fanout), func(b *testing.B) { benchmarkToDevice(b, 256, fanout) })
	}
}

func benchmarkToDevice(b *testing.B, senders, fanout int) {
	e := newToDeviceEnv(b, 0)
	const recipients = 64
	for i := range senders {
		e.user(fmt.Sprintf("@s%d:test", i), "D")
	}
	for i := range recipients {
		e.user(fmt.Sprintf("@r%d:test", i), "D")
	}
	// About the size of an olm-encrypted room key.
	content, _ := json.Marshal(map[string]any{"algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": "k",
		"ciphertext": map[string]any{"key": map[string]any{"type": 0, "body": strings.Repeat("A", 700)}}})
	writes := (b.N + fanout - 1) / fanout
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			sender := fmt.Sprintf("@s%d:test", s)
			for {
				i := next.Add(1)
				if i > int64(writes) {
					return
				}
				messages := map[string]map[string]json.RawMessage{}
				for k := range fanout {
					messages[fmt.Sprintf("@r%d:test", (int(i)+k)%recipients)] = map[string]json.RawMessage{"D": content}
				}
				body, _ := json.Marshal(ToDeviceSend{Type: "m.room.encrypted", Txn: fmt.Sprint(i), Messages: messages})
				res, err := e.client.Write(context.Background(), &schemas.StreamWrite{V: schemas.StreamWriteVersion,
					ID: fmt.Sprintf("b%d", i), Stream: schemas.StreamToDevice, Op: OpToDeviceSend, Key: sender,
					User: sender, Device: "D", Body: body})
				if err != nil || res.Error != nil {
					b.Errorf("write: %v %+v", err, res)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(writes*fanout)/time.Since(start).Seconds(), "msgs/s")
}

// TestLostCommitsProjectedAgain: projections commit without waiting for their WAL flush,
// so a crash of Postgres can lose the last of them. The writer finds the loss (the
// stored position is behind one it committed) without waiting for a write, projects
// the lost records again from the log, and counts later ones once.
func TestLostCommitsProjectedAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newToDeviceEnv(t, 0)
	e.user(alice, "A1")
	e.user(bob, "B1")
	send := func(n int) {
		e.send(alice, "A1", fmt.Sprint(n), map[string]map[string]any{bob: {"B1": map[string]any{"n": float64(n)}}})
	}
	exec := func(tx pgx.Tx, q string) {
		t.Helper()
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	columns := map[string]string{"device_inbox": "*", "to_device_sizes": "*", "stream_positions": "*",
		"to_device_txns": "sender, device_id, txn_id, stream_id"} // not the generated key
	send(0)
	e.settle()
	err := pgx.BeginFunc(ctx, e.db.Pool, func(tx pgx.Tx) error {
		for table := range columns {
			exec(tx, "CREATE TABLE lost_"+table+" AS SELECT * FROM "+table)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	send(1)
	send(2)
	e.settle()
	// Postgres comes back without the last two commits.
	err = pgx.BeginFunc(ctx, e.db.Pool, func(tx pgx.Tx) error {
		for table, cols := range columns {
			exec(tx, "DELETE FROM "+table)
			exec(tx, "INSERT INTO "+table+" SELECT "+cols+" FROM lost_"+table)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.inbox(bob, "B1"); len(got) != 1 {
		t.Fatalf("inbox after the loss: %v", got)
	}
	deadline := time.Now().Add(10 * verifyEvery)
	for len(e.inbox(bob, "B1")) != 3 && time.Now().Before(deadline) {
		time.Sleep(verifyEvery / 10)
	}
	wantInbox(t, e, bob, "B1", 0.0, 1.0, 2.0)
	send(3)
	wantInbox(t, e, bob, "B1", 0.0, 1.0, 2.0, 3.0)
	if sizes := dump(t, e.db, "SELECT user_id, device_id, messages, txns FROM to_device_sizes ORDER BY 1"); fmt.Sprint(sizes) !=
		fmt.Sprintf("[[%s A1 0 4] [%s B1 4 0]]", alice, bob) {
		t.Errorf("sizes %v", sizes)
	}
}

// TestToDeviceAnsweredBeforeProjection: sends are answered once in the log, while their
// projection is held up; their retries deliver nothing, from memory; a deletion of a
// gone device waits for the projections in flight, so none of its rows comes back.
func TestToDeviceAnsweredBeforeProjection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newToDeviceEnv(t, 0)
	e.user(alice, "A1")
	e.user(bob, "B1", "B2")
	// Projections wait for this lock; reads do not.
	lock, err := e.db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, "LOCK TABLE device_inbox IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		txn := fmt.Sprint(i)
		if res := e.send(alice, "A1", txn, map[string]map[string]any{bob: {"*": map[string]any{"n": float64(i)}}}); res.Seq == 0 {
			t.Fatalf("send %d answered without a position", i)
		}
		e.send(alice, "A1", txn, map[string]map[string]any{bob: {"*": map[string]any{"n": -1.0}}})
	}
	var rows int
	if err := e.db.Pool.QueryRow(ctx, "SELECT count(*) FROM to_device_txns").Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("%d transactions projected while projections wait (%v)", rows, err)
	}
	deleted := make(chan *schemas.IntentResult)
	go func() { deleted <- e.write(OpToDeviceDelete, bob, "B1", ToDeviceDelete{Devices: []string{"B1"}}) }()
	select {
	case res := <-deleted:
		t.Fatalf("deletion of a gone device answered before the projections it follows: %+v", res)
	case <-time.After(200 * time.Millisecond):
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if res := <-deleted; res.Error != nil {
		t.Fatal(res.Error)
	}
	wantInbox(t, e, bob, "B1")
	wantInbox(t, e, bob, "B2", 0.0, 1.0, 2.0, 3.0, 4.0)
	if sizes := dump(t, e.db, "SELECT user_id, device_id, messages, txns FROM to_device_sizes ORDER BY 1, 2"); fmt.Sprint(sizes) !=
		fmt.Sprintf("[[%s A1 0 5] [%s B2 5 0]]", alice, bob) {
		t.Errorf("sizes %v", sizes)
	}
}

// failAfterPrepare fails the first batch after its Prepare took it as done.
type failAfterPrepare struct {
	*ToDevice
	failed atomic.Bool
}

func (f *failAfterPrepare) Prepare(ctx context.Context, batch []*schemas.StreamWrite) ([]Outcome, error) {
	out, err := f.ToDevice.Prepare(ctx, batch)
	if err == nil && f.failed.CompareAndSwap(false, true) {
		return out[:0], nil // a short answer, which the writer refuses
	}
	return out, err
}

// TestToDeviceSendAfterAFailedBatch: a batch that fails between Prepare and its append
// is delivered by its retry: the transaction ids the stream held as sent are forgotten.
func TestToDeviceSendAfterAFailedBatch(t *testing.T) {
	t.Parallel()
	var wrapped *failAfterPrepare
	e := newToDeviceEnvWith(t, 0, func(st *ToDevice) Stream {
		wrapped = &failAfterPrepare{ToDevice: st}
		return wrapped
	})
	e.user(alice, "A1")
	e.user(bob, "B1")
	e.send(alice, "A1", "t1", map[string]map[string]any{bob: {"B1": map[string]any{"n": 1.0}}})
	if !wrapped.failed.Load() {
		t.Fatal("the first batch did not fail")
	}
	wantInbox(t, e, bob, "B1", 1.0)
}
