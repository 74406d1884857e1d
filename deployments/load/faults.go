package load

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/ganglionhq/ganglion/deployments/config"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// Bus opens the deployment's JetStream as its configuration names it; done closes it.
type Bus func(cfg *config.Config) (js jetstream.JetStream, topo streams.Topology, done func(), err error)

// faultOptions are the flags of `ganglion faults`.
type faultOptions struct {
	url      string
	configs  stringList
	schedule string
	rate     float64
	clients  int
	rooms    int
	syncers  int
	length   time.Duration
	// caughtUp is the pending messages per consumer that count as caught up.
	caughtUp int
}

// FaultsMain is `ganglion faults`: it sends at a steady rate through a running
// deployment while a schedule of commands kills and restarts its parts, retrying each
// send (same transaction id) until it is answered, as a client does. It then checks
// that every answered send is stored exactly once, and reports per second what was
// answered and refused, how long the deployment took to answer again after each
// fault, and how long its durable consumers took to catch up after each recovery.
func FaultsMain(args []string, bus Bus) error {
	var o faultOptions
	fs := flag.NewFlagSet("faults", flag.ContinueOnError)
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8008", "base URL of the deployment's front door (loopback only)")
	fs.Var(&o.configs, "c", "the deployment's configuration file (repeatable), for its NATS and namespace")
	fs.StringVar(&o.schedule, "schedule", "", "the fault schedule: lines of `OFFSET LABEL: COMMAND`, run with sh -c at OFFSET after the sends start; a LABEL starting with \"recover\" marks a recovery, one starting with \"rescale\" a change of the event writers")
	fs.Float64Var(&o.rate, "rate", 500, "sends per second, paced")
	fs.IntVar(&o.clients, "clients", 64, "sending clients")
	fs.IntVar(&o.rooms, "rooms", 100, "rooms, each created by one client, which sends into the rooms it created")
	fs.IntVar(&o.syncers, "syncers", 4, "clients that also follow their rooms with long-polling /sync")
	fs.DurationVar(&o.length, "for", 3*time.Minute, "how long the sends go on")
	fs.IntVar(&o.caughtUp, "caught-up", 0, "a consumer with at most this many messages pending or unacknowledged is caught up (0: a tenth of a second of -rate)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if o.clients < 1 || o.rooms < o.clients || o.syncers > o.clients || o.rate <= 0 {
		return errors.New("need 1 <= clients <= rooms, syncers <= clients and a positive rate")
	}
	if o.caughtUp == 0 {
		o.caughtUp = max(1, int(o.rate/10))
	}
	if len(o.configs) == 0 {
		return errors.New("pass the deployment's configuration with -c, for its NATS")
	}
	if err := checkLoopbackURLs(o.url); err != nil {
		return err
	}
	faults, err := readSchedule(o.schedule)
	if err != nil {
		return err
	}
	cfg, err := config.Load(o.configs, nil)
	if err != nil {
		return err
	}
	js, topo, done, err := bus(cfg)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), o.length+10*time.Minute)
	defer cancel()
	return runFaults(ctx, os.Stdout, o, faults, js, topo)
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// fault is one line of the schedule.
type fault struct {
	at      time.Duration
	label   string
	command string
	// ran and took are when the command started (after the sends started) and how
	// long it ran.
	ran, took time.Duration
	err       error
}

// recovery reports whether the fault brings a part back ("recover …") or changes the
// event writers ("rescale …"): the run times the consumers' catch-up after it.
func (f *fault) recovery() bool { return strings.HasPrefix(f.label, "recover") || f.rescale() }

// rescale reports whether the fault moves rooms between event writers: each such line
// may give a room one more writer in its log.
func (f *fault) rescale() bool { return strings.HasPrefix(f.label, "rescale") }

// readSchedule parses `OFFSET LABEL: COMMAND` lines; # starts a comment.
func readSchedule(path string) ([]*fault, error) {
	if path == "" {
		return nil, nil
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var out []*fault
	sc := bufio.NewScanner(file)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		offset, rest, _ := strings.Cut(line, " ")
		label, command, ok := strings.Cut(rest, ":")
		at, err := time.ParseDuration(offset)
		if !ok || err != nil || strings.TrimSpace(command) == "" {
			return nil, fmt.Errorf("%s:%d: want `OFFSET LABEL: COMMAND`, such as `30s kill nats-n2: bash deployments/cluster.sh kill nats-n2`", path, n)
		}
		out = append(out, &fault{at: at, label: strings.TrimSpace(label), command: strings.TrimSpace(command)})
	}
	slices.SortStableFunc(out, func(a, b *fault) int { return int(a.at - b.at) })
	return out, sc.Err()
}

// sendRecord is one send of the run.
type sendRecord struct {
	room     id.RoomID
	txn      string
	eventID  string
	attempts int
	// due is when the pacing scheduled it, answered when it was answered, both
	// since the start.
	due, answered time.Duration
	// refused is a final answer that is not worth a retry (a 4xx but 429).
	refused error
}

// second counts what happened in one second of the run.
type second struct {
	answered, retried atomic.Int64
}

// faultRun is the state of one run.
type faultRun struct {
	o       faultOptions
	hs      *homeserver
	start   time.Time
	seconds []second
	// errs counts the refused attempts by kind ("502", "connection refused", ...).
	mu   sync.Mutex
	errs map[string]int
}

func (r *faultRun) since() time.Duration { return time.Since(r.start) }

func (r *faultRun) countError(err error) {
	kind := "other"
	var se *statusError
	switch {
	case errors.As(err, &se):
		kind = strconv.Itoa(se.code)
	case strings.Contains(err.Error(), "connection refused"):
		kind = "connection refused"
	case strings.Contains(err.Error(), "EOF"), strings.Contains(err.Error(), "connection reset"):
		kind = "connection closed"
	case errors.Is(err, context.DeadlineExceeded):
		kind = "timeout"
	}
	r.mu.Lock()
	r.errs[kind]++
	r.mu.Unlock()
}

func (r *faultRun) tick(counter func(*second) *atomic.Int64) {
	if s := int(r.since() / time.Second); s >= 0 && s < len(r.seconds) {
		counter(&r.seconds[s]).Add(1)
	}
}

// retryable reports whether a client would send again after err: a failure of the
// connection, a timeout, a 5xx or a 429.
func retryable(err error) bool {
	var se *statusError
	if errors.As(err, &se) {
		return se.code >= 500 || se.code == 429
	}
	return true
}

// sendUntilAnswered sends until the deployment answers, with the same transaction id.
func (r *faultRun) sendUntilAnswered(ctx context.Context, u *user, rec *sendRecord) {
	body := []byte(`{"msgtype":"m.text","body":"fault run ` + rec.txn + `"}`)
	for ctx.Err() == nil {
		rec.attempts++
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		eventID, err := r.hs.sendTxn(actx, u, rec.room, rec.txn, body)
		cancel()
		if err == nil {
			rec.eventID, rec.answered = eventID, r.since()
			r.tick(func(s *second) *atomic.Int64 { return &s.answered })
			return
		}
		r.countError(err)
		if !retryable(err) {
			rec.refused = err
			return
		}
		r.tick(func(s *second) *atomic.Int64 { return &s.retried })
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// consumerSample is the durable consumers' worst backlog at one moment.
type consumerSample struct {
	at      time.Duration
	worst   string
	pending uint64
	err     error
}

func runFaults(ctx context.Context, out io.Writer, o faultOptions, faults []*fault, js jetstream.JetStream, topo streams.Topology) error {
	hs := newHomeserver(o.url)
	fmt.Fprintf(out, "ganglion faults, %s: %g sends/s for %s from %d clients into %d rooms, %d following them with /sync, through %s\n",
		time.Now().UTC().Format(time.RFC3339), o.rate, o.length, o.clients, o.rooms, o.syncers, o.url)
	users, err := hs.registerMany(ctx, "faults"+randomHex(3), o.clients)
	if err != nil {
		return err
	}
	owned := make([][]id.RoomID, o.clients)
	for i := range o.rooms {
		room, err := users[i%o.clients].createRoom(ctx)
		if err != nil {
			return err
		}
		owned[i%o.clients] = append(owned[i%o.clients], room)
	}
	fmt.Fprintf(out, "set up %d users and %d rooms\n", len(users), o.rooms)

	r := &faultRun{o: o, hs: hs, seconds: make([]second, int(o.length/time.Second)+600), errs: map[string]int{}}
	runID := randomHex(4)
	// Each client sends its share in order, from a queue the pacing fills: a client
	// that is retrying falls behind, and its sends wait their turn, as a client's do.
	queues := make([]chan *sendRecord, o.clients)
	var records []*sendRecord
	var wg sync.WaitGroup
	sendCtx, stopSends := context.WithCancel(ctx)
	defer stopSends()
	for i, u := range users {
		queues[i] = make(chan *sendRecord, int(o.rate*o.length.Seconds())/o.clients+16)
		wg.Go(func() {
			for rec := range queues[i] {
				r.sendUntilAnswered(sendCtx, u, rec)
			}
		})
	}
	syncs := make([]*syncFollower, o.syncers)
	syncCtx, stopSyncs := context.WithCancel(ctx)
	defer stopSyncs()
	var syncWG sync.WaitGroup
	for i := range syncs {
		syncs[i] = &syncFollower{u: users[i], rooms: owned[i], seen: map[string]int{}}
		syncWG.Go(func() { syncs[i].run(syncCtx, r) })
	}

	logStart, err := topo.EventsLastSeq(js)(ctx)
	if err != nil {
		return err
	}
	samples := make(chan []consumerSample, 1)
	watchCtx, stopWatch := context.WithCancel(ctx)
	go func() { samples <- r.watchConsumers(watchCtx, js, topo) }()

	r.start = time.Now()
	go r.runSchedule(ctx, faults)
	go r.progress(watchCtx, os.Stderr)
	interval := time.Duration(float64(time.Second) / o.rate)
	n := int(o.rate * o.length.Seconds())
	for k := range n {
		due := time.Duration(k) * interval
		if wait := time.Until(r.start.Add(due)); wait > 0 {
			time.Sleep(wait)
		}
		c := k % o.clients
		rooms := owned[c]
		rec := &sendRecord{room: rooms[(k/o.clients)%len(rooms)], txn: fmt.Sprintf("%s-%d-%d", runID, c, k), due: due}
		records = append(records, rec)
		queues[c] <- rec
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	sentFor := r.since()
	fmt.Fprintf(out, "all %d sends answered or refused %s after the start (the pacing ended at %s)\n", n, sentFor.Round(time.Millisecond), o.length)
	// The consumers catch up, then the follow-ups stop.
	drained := r.waitCaughtUp(ctx, js, topo, time.Minute)
	stopWatch()
	series := <-samples
	time.Sleep(2 * time.Second) // the long-polls take what is left
	stopSyncs()
	syncWG.Wait()

	// Reading the histories back has time of its own, however long the sends took.
	readCtx, cancelRead := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	defer cancelRead()
	stored, err := storedEvents(readCtx, users, owned, runID)
	if err != nil {
		fmt.Fprintf(out, "reading the rooms' histories back: %v\n", err)
	}
	writers, err := roomWriters(readCtx, js, topo, logStart+1, owned)
	if err != nil {
		fmt.Fprintf(out, "reading the events log's writer headers: %v\n", err)
		writers = nil
	}
	return r.report(out, faults, records, series, syncs, stored, writers, drained)
}

// progress prints the answered sends of every ten seconds as the run goes.
func (r *faultRun) progress(ctx context.Context, out io.Writer) {
	for s := 10; ; s += 10 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(r.start.Add(time.Duration(s) * time.Second))):
		}
		var answered, retried int64
		for i := s - 10; i < s && i < len(r.seconds); i++ {
			answered += r.seconds[i].answered.Load()
			retried += r.seconds[i].retried.Load()
		}
		fmt.Fprintf(out, "%4ds: %d sends answered in the last 10 s (%.0f/s), %d attempts retried\n", s, answered, float64(answered)/10, retried)
	}
}

// runSchedule runs each fault's command at its offset.
func (r *faultRun) runSchedule(ctx context.Context, faults []*fault) {
	for _, f := range faults {
		if wait := time.Until(r.start.Add(f.at)); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		f.ran = r.since()
		cmd := exec.CommandContext(ctx, "sh", "-c", f.command)
		output, err := cmd.CombinedOutput()
		f.took = r.since() - f.ran
		if err != nil {
			f.err = fmt.Errorf("%v: %s", err, strings.TrimSpace(string(output)))
		}
	}
}

// watchConsumers samples the durable consumers' backlog every half second.
func (r *faultRun) watchConsumers(ctx context.Context, js jetstream.JetStream, topo streams.Topology) []consumerSample {
	var out []consumerSample
	for ctx.Err() == nil {
		out = append(out, r.sampleConsumers(ctx, js, topo))
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return out
}

func (r *faultRun) sampleConsumers(ctx context.Context, js jetstream.JetStream, topo streams.Topology) consumerSample {
	s := consumerSample{at: r.since()}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	status, err := streams.Status(sctx, js, topo)
	if err != nil {
		s.err = err
		return s
	}
	for _, st := range status {
		for _, c := range st.Consumers {
			if backlog := c.Pending + uint64(c.AckPending); backlog >= s.pending {
				s.pending, s.worst = backlog, st.Name+"/"+c.Name
			}
		}
	}
	return s
}

// waitCaughtUp waits until every durable consumer is caught up, and says how long it took.
func (r *faultRun) waitCaughtUp(ctx context.Context, js jetstream.JetStream, topo streams.Topology, limit time.Duration) time.Duration {
	t0 := time.Now()
	for time.Since(t0) < limit {
		if s := r.sampleConsumers(ctx, js, topo); s.err == nil && s.pending == 0 {
			return time.Since(t0)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return -1
}

// syncFollower is a client following its rooms with long-polling /sync.
type syncFollower struct {
	u       *user
	rooms   []id.RoomID
	seen    map[string]int
	errors  int
	limited int
	// longest is the longest stretch of failing requests.
	longest time.Duration
}

func (s *syncFollower) run(ctx context.Context, r *faultRun) {
	since := ""
	const filter = `{"room":{"timeline":{"limit":1000}},"presence":{"not_types":["*"]}}`
	var failingSince time.Duration = -1
	for ctx.Err() == nil {
		resp, err := r.hs.sync(ctx, s.u, since, filter, 10*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.errors++
			r.countError(err)
			if failingSince < 0 {
				failingSince = r.since()
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if failingSince >= 0 {
			s.longest = max(s.longest, r.since()-failingSince)
			failingSince = -1
		}
		for _, room := range resp.Rooms.Join {
			if room.Timeline.Limited && since != "" {
				s.limited++
			}
			for _, ev := range room.Timeline.Events {
				s.seen[ev.EventID]++
			}
		}
		since = resp.NextBatch
	}
}

// roomWriters reads the events log from seq on and returns, for each of the run's
// rooms, the writers that appended its messages, one entry per run of messages by the
// same writer.
func roomWriters(ctx context.Context, js jetstream.JetStream, topo streams.Topology, from uint64, owned [][]id.RoomID) (map[string][]string, error) {
	var out map[string][]string
	// The bus may still be settling after the run's faults: read again from the start.
	err := streams.Retry(ctx, zap.NewNop(), "reading the log", streams.BusUnavailable, func(ctx context.Context) error {
		out = map[string][]string{}
		for _, rooms := range owned {
			for _, room := range rooms {
				out[string(room)] = nil
			}
		}
		_, err := streams.ReadLog(ctx, js, topo, streams.LogRange{From: from, Chunk: 1024}, func(msgs []schemas.LogMessage) error {
			for _, m := range msgs {
				runs, ours := out[m.Batch.RoomID]
				if ours && (len(runs) == 0 || runs[len(runs)-1] != m.Writer) {
					out[m.Batch.RoomID] = append(runs, m.Writer)
				}
			}
			return nil
		})
		return err
	})
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return out, err
}

// storedEvents reads every room's whole history through the deployment, as its creator,
// and counts the run's messages by event id and transaction.
func storedEvents(ctx context.Context, users []*user, owned [][]id.RoomID, runID string) (map[string][]string, error) {
	byTxn := map[string][]string{}
	for i, rooms := range owned {
		for _, room := range rooms {
			from := ""
			for {
				resp, err := users[i].mx.Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, 1000)
				if err != nil {
					return nil, fmt.Errorf("history of %s: %w", room, err)
				}
				for _, ev := range resp.Chunk {
					body, _ := ev.Content.Raw["body"].(string)
					if txn, ok := strings.CutPrefix(body, "fault run "); ok && strings.HasPrefix(txn, runID+"-") {
						byTxn[txn] = append(byTxn[txn], string(ev.ID))
					}
				}
				if resp.End == "" || len(resp.Chunk) == 0 {
					break
				}
				from = resp.End
			}
		}
	}
	return byTxn, nil
}

func (r *faultRun) report(out io.Writer, faults []*fault, records []*sendRecord, series []consumerSample, syncs []*syncFollower,
	stored, writers map[string][]string, drained time.Duration) error {
	var answered, refused, retriedSends, lost, duplicated, wrongID int
	var longest time.Duration
	var lateness []time.Duration
	answeredIDs := map[string]bool{}
	for _, rec := range records {
		if rec.refused != nil {
			refused++
			continue
		}
		if rec.eventID == "" {
			continue
		}
		answered++
		answeredIDs[rec.eventID] = true
		if rec.attempts > 1 {
			retriedSends++
		}
		longest = max(longest, rec.answered-rec.due)
		lateness = append(lateness, rec.answered-rec.due)
		got := stored[rec.txn]
		switch {
		case len(got) == 0:
			lost++
		case len(got) > 1:
			duplicated++
		case got[0] != rec.eventID:
			wrongID++
		}
	}
	fmt.Fprintf(out, "\nsends: %d scheduled, %d answered (%d of them after retries), %d refused for good\n", len(records), answered, retriedSends, refused)
	fmt.Fprintf(out, "from schedule to answer: p50 %s, p99 %s, max %s\n", fmtDur(percentile(lateness, 0.5)), fmtDur(percentile(lateness, 0.99)), fmtDur(longest))
	fmt.Fprintf(out, "stored (each room's history read back): answered sends lost %d, stored twice or more %d, stored under another event id %d\n", lost, duplicated, wrongID)
	r.mu.Lock()
	kinds := make([]string, 0, len(r.errs))
	for k := range r.errs {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	var errs []string
	for _, k := range kinds {
		errs = append(errs, fmt.Sprintf("%s ×%d", k, r.errs[k]))
	}
	r.mu.Unlock()
	fmt.Fprintf(out, "failed attempts, retried by the clients: %s\n", cmp.Or(strings.Join(errs, ", "), "none"))
	for _, s := range syncs {
		missing, twice := 0, 0
		for _, rec := range records {
			if rec.eventID != "" && slices.Contains(s.rooms, rec.room) && s.seen[rec.eventID] == 0 {
				missing++
			}
		}
		for evID, n := range s.seen {
			if n > 1 && answeredIDs[evID] {
				twice++
			}
		}
		fmt.Fprintf(out, "/sync of %s: %d failed requests (longest failing stretch %s), %d limited timelines, answered sends never seen %d, seen twice %d\n",
			s.u.id, s.errors, fmtDur(s.longest), s.limited, missing, twice)
	}

	// Each rescale may move a room once; a room whose log shows more runs of writers
	// than that had two writers taking turns.
	rescales := 0
	for _, f := range faults {
		if f.rescale() {
			rescales++
		}
	}
	runs := map[int]int{}
	turns := 0
	for room, ws := range writers {
		runs[len(ws)]++
		if len(ws) > rescales+1 {
			turns++
			fmt.Fprintf(out, "room %s was appended by %s in turn\n", room, strings.Join(ws, " → "))
		}
	}
	fmt.Fprintf(out, "event writers of each room's log messages during the run (runs of one writer: rooms): %v; rooms with writers taking turns (more runs than the %d rescales allow): %d\n",
		runs, rescales, turns)

	fmt.Fprintln(out, "\nfaults:")
	for _, f := range faults {
		status := "ok"
		if f.err != nil {
			status = "FAILED: " + f.err.Error()
		}
		fmt.Fprintf(out, "  %7s  %-22s %s (ran %s, took %s): %s\n", f.at, f.label, f.command, f.ran.Round(time.Millisecond), f.took.Round(time.Millisecond), status)
		if !f.recovery() {
			continue
		}
		caught := time.Duration(-1)
		for _, s := range series {
			if s.at >= f.ran+f.took && s.err == nil && s.pending <= uint64(r.o.caughtUp) {
				caught = s.at - (f.ran + f.took)
				break
			}
		}
		worst := consumerSample{}
		for _, s := range series {
			if s.at >= f.ran+f.took && (caught < 0 || s.at <= f.ran+f.took+caught) && s.pending >= worst.pending {
				worst = s
			}
		}
		if caught < 0 {
			fmt.Fprintf(out, "           every durable consumer caught up (≤ %d pending): NOT within the run; worst %s with %d\n", r.o.caughtUp, worst.worst, worst.pending)
		} else {
			fmt.Fprintf(out, "           every durable consumer caught up (≤ %d pending) %s after the command returned (worst before: %s, %d)\n", r.o.caughtUp, fmtDur(caught), worst.worst, worst.pending)
		}
	}
	if drained >= 0 {
		fmt.Fprintf(out, "after the last send: every durable consumer at 0 pending within %s\n", fmtDur(drained))
	} else {
		fmt.Fprintln(out, "after the last send: the durable consumers did NOT drain within a minute")
	}

	fmt.Fprintln(out, "\nper second: answered sends (retried attempts)")
	var line []string
	for i := range int(r.o.length/time.Second) + 5 {
		line = append(line, fmt.Sprintf("%d:%d(%d)", i, r.seconds[i].answered.Load(), r.seconds[i].retried.Load()))
		if len(line) == 10 {
			fmt.Fprintln(out, "  "+strings.Join(line, " "))
			line = nil
		}
	}
	if len(line) > 0 {
		fmt.Fprintln(out, "  "+strings.Join(line, " "))
	}
	if lost+duplicated+wrongID+turns > 0 || refused > 0 || len(stored) == 0 || writers == nil {
		return fmt.Errorf("faults: %d lost, %d duplicated, %d under another id, %d refused, %d rooms with writers taking turns",
			lost, duplicated, wrongID, refused, turns)
	}
	return nil
}
