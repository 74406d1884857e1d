package streams_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

// consumeFixture is an embedded JetStream server with a work stream, its
// dead-letter stream and one durable consumer, all under a random namespace.
type consumeFixture struct {
	js       jetstream.JetStream
	ns       string
	work     string // stream name
	dlq      string // dead-letter stream name
	consumer jetstream.Consumer
}

func newConsumeFixture(t *testing.T) *consumeFixture {
	t.Helper()
	js := natstest.Connect(t).JS
	f := &consumeFixture{js: js, ns: natstest.Namespace()}
	up := strings.ToUpper(f.ns)
	f.work, f.dlq = up+"_WORK", up+"_DEADLETTER"
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: f.work, Subjects: []string{f.ns + ".work.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: f.dlq, Subjects: []string{f.ns + ".dlq.>"}}); err != nil {
		t.Fatal(err)
	}
	var err error
	f.consumer, err = js.CreateOrUpdateConsumer(ctx, f.work, jetstream.ConsumerConfig{
		Durable: "worker", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, MaxDeliver: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *consumeFixture) publish(t *testing.T, subject, body string, hdr nats.Header) {
	t.Helper()
	msg := &nats.Msg{Subject: f.ns + ".work." + subject, Data: []byte(body), Header: hdr}
	if _, err := f.js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
}

func (f *consumeFixture) runner(t *testing.T) *streams.Runner {
	return &streams.Runner{
		Name: "worker", Consumer: f.consumer, JS: f.js,
		DeadLetterSubject: f.ns + ".dlq.worker",
		MaxDeliver:        3,
		Backoff:           func(int) time.Duration { return 10 * time.Millisecond },
		Log:               zaptest.NewLogger(t),
		Metrics:           new(streams.Metrics),
	}
}

// start runs r in the background; the returned function stops it and
// returns Run's result.
func start(t *testing.T, r *streams.Runner, h streams.BatchHandler) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, h) }()
	var once sync.Once
	var result error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(time.Minute):
				t.Error("Run did not return after its context was cancelled")
			}
		})
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// eventually polls cond; the deadline is only a guard against hanging forever.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settled reports whether the consumer has nothing pending or unacked.
func (f *consumeFixture) settled(t *testing.T) bool {
	info, err := f.consumer.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumPending == 0 && info.NumAckPending == 0
}

type recorder struct {
	mu   sync.Mutex
	seen map[string]int // body -> times handled successfully
}

func (rec *recorder) ok(body string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.seen == nil {
		rec.seen = map[string]int{}
	}
	rec.seen[body]++
}

func (rec *recorder) count(body string) int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.seen[body]
}

func TestRunnerAcksSuccesses(t *testing.T) {
	t.Parallel()
	f := newConsumeFixture(t)
	for i := range 7 {
		f.publish(t, "a", "m"+strconv.Itoa(i), nil)
	}
	r := f.runner(t)
	r.MaxBatch = 3
	var rec recorder
	var mu sync.Mutex
	var sizes []int
	start(t, r, func(ctx context.Context, msgs []jetstream.Msg) []error {
		mu.Lock()
		sizes = append(sizes, len(msgs))
		mu.Unlock()
		for _, m := range msgs {
			rec.ok(string(m.Data()))
		}
		return nil
	})
	eventually(t, "all acked", func() bool { return f.settled(t) && r.Metrics.Snapshot().Processed == 7 })
	for i := range 7 {
		if n := rec.count("m" + strconv.Itoa(i)); n != 1 {
			t.Errorf("m%d handled %d times", i, n)
		}
	}
	mu.Lock()
	for _, s := range sizes {
		if s < 1 || s > 3 {
			t.Errorf("batch of %d messages with MaxBatch 3", s)
		}
	}
	mu.Unlock()
	s := r.Metrics.Snapshot()
	if s.Failed != 0 || s.Retried != 0 || s.DeadLettered != 0 || s.Panics != 0 || s.Batches < 3 {
		t.Errorf("metrics: %+v", s)
	}
}

func TestRunnerRetriesTransientErrors(t *testing.T) {
	t.Parallel()
	f := newConsumeFixture(t)
	f.publish(t, "a", "flaky", nil)
	f.publish(t, "a", "fine", nil)
	r := f.runner(t)
	var rec recorder
	start(t, r, streams.PerMessage(func(ctx context.Context, m jetstream.Msg) error {
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		if string(m.Data()) == "flaky" && meta.NumDelivered < 2 {
			return errors.New("database unavailable")
		}
		rec.ok(string(m.Data()))
		return nil
	}))
	eventually(t, "flaky handled", func() bool { return rec.count("flaky") == 1 && f.settled(t) })
	s := r.Metrics.Snapshot()
	if s.Processed != 2 || s.Failed != 1 || s.Retried != 1 || s.DeadLettered != 0 {
		t.Errorf("metrics: %+v", s)
	}
	if rec.count("fine") != 1 {
		t.Errorf("fine handled %d times", rec.count("fine"))
	}
	if n := f.dlqCount(t); n != 0 {
		t.Errorf("%d dead letters, want 0", n)
	}
}

func (f *consumeFixture) dlqCount(t *testing.T) uint64 {
	st, err := f.js.Stream(context.Background(), f.dlq)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func (f *consumeFixture) dlqMessage(t *testing.T, seq uint64) *jetstream.RawStreamMsg {
	st, err := f.js.Stream(context.Background(), f.dlq)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(context.Background(), seq)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRunnerDeadLettersPoisonAndKeepsGoing(t *testing.T) {
	t.Parallel()
	f := newConsumeFixture(t)
	hdr := nats.Header{}
	hdr.Set("Ganglion-Room", "!r:example.com")
	hdr.Set(jetstream.MsgIDHeader, "poison-1")
	f.publish(t, "room1", "poison", hdr)
	for i := range 5 {
		f.publish(t, "room1", "good"+strconv.Itoa(i), nil)
	}
	r := f.runner(t)
	r.MaxBatch = 1 // the poison message is alone at the head of the consumer
	var rec recorder
	start(t, r, streams.PerMessage(func(ctx context.Context, m jetstream.Msg) error {
		if string(m.Data()) == "poison" {
			return errors.New("cannot decode\nintent")
		}
		rec.ok(string(m.Data()))
		return nil
	}))
	eventually(t, "poison dead-lettered", func() bool { return f.dlqCount(t) == 1 && f.settled(t) })
	for i := range 5 {
		if n := rec.count("good" + strconv.Itoa(i)); n != 1 {
			t.Errorf("good%d handled %d times", i, n)
		}
	}
	dl := f.dlqMessage(t, 1)
	if string(dl.Data) != "poison" || dl.Subject != f.ns+".dlq.worker" {
		t.Errorf("dead letter %q on %s", dl.Data, dl.Subject)
	}
	want := map[string]string{
		streams.HeaderDLQStream:     f.work,
		streams.HeaderDLQSubject:    f.ns + ".work.room1",
		streams.HeaderDLQSequence:   "1",
		streams.HeaderDLQConsumer:   "worker",
		streams.HeaderDLQDeliveries: "3",
		streams.HeaderDLQError:      "cannot decode intent",
		"Ganglion-Room":             "!r:example.com",
	}
	for k, v := range want {
		if got := dl.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if got := dl.Header.Get(jetstream.MsgIDHeader); got == "poison-1" {
		t.Errorf("the original's message id leaked into the dead letter")
	}
	s := r.Metrics.Snapshot()
	if s.DeadLettered != 1 || s.Failed != 3 || s.Retried != 2 || s.Processed != 5 {
		t.Errorf("metrics: %+v", s)
	}
}

func TestRunnerDeadLettersPermanentErrorsAtOnce(t *testing.T) {
	t.Parallel()
	f := newConsumeFixture(t)
	f.publish(t, "a", "malformed", nil)
	r := f.runner(t)
	r.MaxDeliver = 100
	start(t, r, streams.PerMessage(func(ctx context.Context, m jetstream.Msg) error {
		return streams.Permanent(errors.New("schema version 99 unknown"))
	}))
	eventually(t, "dead letter", func() bool { return f.dlqCount(t) == 1 && f.settled(t) })
	dl := f.dlqMessage(t, 1)
	if got := dl.Header.Get(streams.HeaderDLQDeliveries); got != "1" {
		t.Errorf("deliveries = %q, want 1", got)
	}
	if got := dl.Header.Get(streams.HeaderDLQError); got != "schema version 99 unknown" {
		t.Errorf("error header = %q", got)
	}
	if s := r.Metrics.Snapshot(); s.Retried != 0 || s.DeadLettered != 1 {
		t.Errorf("metrics: %+v", s)
	}
}

func TestRunnerRecoversPanics(t *testing.T) {
	t.Parallel()
	f := newConsumeFixture(t)
	f.publish(t, "a", "one", nil)
	f.publish(t, "a", "boom", nil)
	f.publish(t, "a", "two", nil)
	r := f.runner(t)
	var rec recorder
	// A batch handler that panics on "boom": the whole first batch panics, and
	// the runner must isolate the culprit so "one" and "two" still succeed.
	start(t, r, func(ctx context.Context, msgs []jetstream.Msg) []error {
		for _, m := range msgs {
			if string(m.Data()) == "boom" {
				panic("boom")
			}
		}
		for _, m := range msgs {
			rec.ok(string(m.Data()))
		}
		return nil
	})
	eventually(t, "boom dead-lettered", func() bool { return f.dlqCount(t) == 1 && f.settled(t) })
	if rec.count("one") != 1 || rec.count("two") != 1 {
		t.Errorf("one handled %d, two handled %d times; want 1 each", rec.count("one"), rec.count("two"))
	}
	dl := f.dlqMessage(t, 1)
	if string(dl.Data) != "boom" || !strings.Contains(dl.Header.Get(streams.HeaderDLQError), streams.ErrHandlerPanic.Error()) {
		t.Errorf("dead letter %q with error %q", dl.Data, dl.Header.Get(streams.HeaderDLQError))
	}
	if s := r.Metrics.Snapshot(); s.Panics < 3 || s.Processed != 2 || s.DeadLettered != 1 {
		t.Errorf("metrics: %+v", s)
	}
}

func TestRunnerStopsOnCancel(t *testing.T) {
	t.Parallel()
	f := newConsumeFixture(t)
	r := &streams.Runner{Consumer: f.consumer, MaxWait: time.Hour} // zero values elsewhere
	calls := make(chan struct{}, 1)
	stop := start(t, r, func(ctx context.Context, msgs []jetstream.Msg) []error {
		calls <- struct{}{}
		return nil
	})
	f.publish(t, "a", "x", nil)
	<-calls
	// Run now sits in a pull request that would last an hour.
	eventually(t, "ack", func() bool { return f.settled(t) })
	if err := stop(); err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
}

func TestRunnerFailsWhenConsumerDeleted(t *testing.T) {
	t.Parallel()
	f := newConsumeFixture(t)
	r := &streams.Runner{Consumer: f.consumer, MaxWait: 200 * time.Millisecond, Log: zaptest.NewLogger(t)}
	done := make(chan error, 1)
	go func() {
		done <- r.Run(context.Background(), streams.PerMessage(func(context.Context, jetstream.Msg) error { return nil }))
	}()
	if err := f.js.DeleteConsumer(context.Background(), f.work, "worker"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run returned nil for a deleted consumer")
		}
	case <-time.After(time.Minute):
		t.Fatal("Run kept going without its consumer")
	}
}

func TestRunnerRejectsMisconfiguration(t *testing.T) {
	t.Parallel()
	h := streams.PerMessage(func(context.Context, jetstream.Msg) error { return nil })
	if err := (&streams.Runner{}).Run(context.Background(), h); err == nil {
		t.Error("Run without a consumer succeeded")
	}
	f := newConsumeFixture(t)
	if err := (&streams.Runner{Consumer: f.consumer, DeadLetterSubject: "x.dlq.y"}).Run(context.Background(), h); err == nil {
		t.Error("Run with a dead-letter subject but no JetStream succeeded")
	}
}

func TestDefaultBackoffGrowsAndIsCapped(t *testing.T) {
	t.Parallel()
	prev := time.Duration(0)
	for d := 0; d < 100; d++ {
		b := streams.DefaultBackoff(d)
		if b < prev || b <= 0 || b > time.Minute {
			t.Fatalf("DefaultBackoff(%d) = %v after %v", d, b, prev)
		}
		prev = b
	}
	if streams.DefaultBackoff(1) != time.Second || streams.DefaultBackoff(3) != 4*time.Second || streams.DefaultBackoff(50) != time.Minute {
		t.Errorf("backoff steps: %v %v %v", streams.DefaultBackoff(1), streams.DefaultBackoff(3), streams.DefaultBackoff(50))
	}
}

func TestPermanent(t *testing.T) {
	t.Parallel()
	base := errors.New("bad")
	if streams.Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
	p := streams.Permanent(base)
	if !streams.IsPermanent(p) || !errors.Is(p, base) || p.Error() != "bad" {
		t.Errorf("Permanent(%v) = %v", base, p)
	}
	if streams.IsPermanent(base) || !streams.IsPermanent(errors.Join(errors.New("ctx"), p)) {
		t.Error("IsPermanent misclassifies")
	}
}

// TestRedeliverDeadLetter lists a dead letter with its context, then, once the cause
// is fixed, sends it back to its original subject, where the consumer handles it.
func TestRedeliverDeadLetter(t *testing.T) {
	t.Parallel()
	f := newConsumeFixture(t)
	hdr := nats.Header{}
	hdr.Set("Ganglion-Room", "!r:example.com")
	f.publish(t, "room1", "needs-a-fix", hdr)
	r := f.runner(t)
	var fixed atomic.Bool
	var rec recorder
	start(t, r, streams.PerMessage(func(ctx context.Context, m jetstream.Msg) error {
		if !fixed.Load() {
			return streams.Permanent(errors.New("bug in the handler"))
		}
		if m.Headers().Get("Ganglion-Room") != "!r:example.com" {
			return streams.Permanent(errors.New("application header lost"))
		}
		rec.ok(string(m.Data()))
		return nil
	}))
	eventually(t, "dead-lettered", func() bool { return f.dlqCount(t) == 1 && f.settled(t) })
	ctx := context.Background()
	dls, err := streams.DeadLetters(ctx, f.js, f.dlq, 10)
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters: %+v, %v", dls, err)
	}
	dl := dls[0]
	if dl.Subject != f.ns+".work.room1" || dl.Stream != f.work || dl.Error != "bug in the handler" || string(dl.Msg.Data) != "needs-a-fix" {
		t.Fatalf("dead letter %+v", dl)
	}
	fixed.Store(true)
	if err := streams.Redeliver(ctx, f.js, f.dlq, dl.Seq); err != nil {
		t.Fatal(err)
	}
	eventually(t, "redelivered and handled", func() bool { return rec.count("needs-a-fix") == 1 && f.settled(t) })
	if dls, err := streams.DeadLetters(ctx, f.js, f.dlq, 10); err != nil || len(dls) != 0 {
		t.Fatalf("dead letters after the redelivery: %+v, %v", dls, err)
	}
}

func TestRunnerWaitsInPlaceWhileUnavailable(t *testing.T) {
	t.Parallel()
	f := newConsumeFixture(t)
	f.publish(t, "a", "needs-db", nil)
	r := f.runner(t) // MaxDeliver 3: more failures than that would dead-letter
	var calls atomic.Int32
	var deliveredAtSuccess atomic.Uint64
	start(t, r, streams.PerMessage(func(ctx context.Context, m jetstream.Msg) error {
		if calls.Add(1) <= 6 {
			return streams.Unavailable(errors.New("connection refused"))
		}
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		deliveredAtSuccess.Store(meta.NumDelivered)
		return nil
	}))
	eventually(t, "handled after the outage", func() bool { return r.Metrics.Snapshot().Processed == 1 && f.settled(t) })
	if n := deliveredAtSuccess.Load(); n != 1 {
		t.Errorf("the message was delivered %d times; waiting in place must not spend deliveries", n)
	}
	if n := f.dlqCount(t); n != 0 {
		t.Errorf("%d dead letters for an outage", n)
	}
	if s := r.Metrics.Snapshot(); s.Waits != 6 || s.Retried != 0 || s.DeadLettered != 0 {
		t.Errorf("metrics: %+v", s)
	}
}

func TestRunnerKeepsSlowMessagesInProgress(t *testing.T) {
	t.Parallel()
	f := newConsumeFixture(t)
	cons, err := f.js.CreateOrUpdateConsumer(context.Background(), f.work, jetstream.ConsumerConfig{
		Durable: "slow", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 1500 * time.Millisecond, MaxDeliver: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(t, "a", "slow", nil)
	r := f.runner(t)
	r.Consumer = cons
	var calls atomic.Int32
	start(t, r, streams.PerMessage(func(ctx context.Context, m jetstream.Msg) error {
		calls.Add(1)
		time.Sleep(5 * time.Second) // several AckWaits
		return nil
	}))
	eventually(t, "handled", func() bool { return r.Metrics.Snapshot().Processed == 1 })
	time.Sleep(2 * time.Second) // a redelivery would be on its way by now
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 || info.NumRedelivered != 0 {
		t.Errorf("handled %d times, %d redelivered: JetStream redelivered a message still in progress", n, info.NumRedelivered)
	}
}

// TestRunnerKeepsBufferedMessagesInProgress: while one message waits in place for a
// dependency, the messages received behind it (up to the consumer's MaxAckPending,
// many batches' worth) are kept in progress too, so the outage spends none of their
// deliveries and none is handled twice.
func TestRunnerKeepsBufferedMessagesInProgress(t *testing.T) {
	t.Parallel()
	f := newConsumeFixture(t)
	cons, err := f.js.CreateOrUpdateConsumer(context.Background(), f.work, jetstream.ConsumerConfig{
		Durable: "waiting", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 1500 * time.Millisecond,
		MaxDeliver: -1, MaxAckPending: 16,
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 30
	for i := range n {
		f.publish(t, "a", "m"+strconv.Itoa(i), nil)
	}
	r := f.runner(t)
	r.Consumer, r.MaxBatch = cons, 4
	var outage atomic.Bool
	outage.Store(true)
	var mu sync.Mutex
	deliveries := map[string][]uint64{}
	start(t, r, func(ctx context.Context, msgs []jetstream.Msg) []error {
		errs := make([]error, len(msgs))
		for i, m := range msgs {
			if string(m.Data()) == "m0" && outage.Load() {
				errs[i] = streams.Unavailable(errors.New("db down"))
				continue
			}
			meta, err := m.Metadata()
			if err != nil {
				errs[i] = err
				continue
			}
			mu.Lock()
			deliveries[string(m.Data())] = append(deliveries[string(m.Data())], meta.NumDelivered)
			mu.Unlock()
		}
		return errs
	})
	time.Sleep(6 * time.Second) // four AckWaits of outage
	outage.Store(false)
	eventually(t, "all handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(deliveries) == n
	})
	time.Sleep(2 * time.Second) // a late redelivery would be handled by now
	mu.Lock()
	defer mu.Unlock()
	for body, d := range deliveries {
		if len(d) != 1 || d[0] != 1 {
			t.Errorf("%s handled with deliveries %v; want once, on its first delivery", body, d)
		}
	}
}

func TestBusUnavailable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("publish: %w", nats.ErrTimeout), true},
		{nats.ErrConnectionClosed, true},
		{jetstream.ErrNoStreamResponse, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, false},
		{nats.ErrMaxPayload, false},
		{errors.New("log message 7: bad JSON"), false},
		{nil, false},
	} {
		if got := streams.BusUnavailable(tc.err); got != tc.want {
			t.Errorf("BusUnavailable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
