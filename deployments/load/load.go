// Package load is `ganglion load`: it drives a running homeserver over HTTP on this
// machine and prints send rates and latencies, next to the ceilings of the parts a send
// is made of (HTTP, JetStream, event signing, Postgres), measured in the same run.
//
// Everything it does is bounded in count and in time, and it only talks to addresses
// on this machine: the server URL, the NATS URL and the Postgres DSN must all resolve to
// loopback.
package load

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"maunium.net/go/mautrix/id"

	"github.com/ganglionhq/ganglion/processors/appservice"
)

// sendTarget is a send scenario's target from issue 7, for one process on this 2-core
// machine with the load generator on it too: a rate, and where set a p50 and a share
// of the same run's batched-path ceiling.
type sendTarget struct {
	rate      float64
	p50       time.Duration
	ofCeiling float64
}

var (
	targetSequential = sendTarget{rate: 1500, p50: 600 * time.Microsecond}
	targetOneRoom    = sendTarget{rate: 4000}
	targetManyRooms  = sendTarget{rate: 6000, ofCeiling: 0.9}
)

// targetSyncP99 bounds scenario (d), from a send's 200 to the event in another
// client's /sync (issue 7).
const targetSyncP99 = 5 * time.Millisecond

// String is the target as the results table shows it.
func (t sendTarget) String() string {
	s := fmt.Sprintf("≥ %.0f", t.rate)
	if t.p50 > 0 {
		s += ", p50 ≤ " + fmtDur(t.p50)
	}
	if t.ofCeiling > 0 {
		s += fmt.Sprintf(", ≥ %.1f of ceiling", t.ofCeiling)
	}
	return s
}

// met reports whether r meets the target; ceiling is the run's batched-path ceiling,
// 0 when not measured (then the share is not judged).
func (t sendTarget) met(r result, ceiling float64) bool {
	if r.rate() < t.rate || (t.p50 > 0 && percentile(r.lat, 0.5) > t.p50) {
		return false
	}
	return t.ofCeiling == 0 || ceiling == 0 || r.rate()/ceiling >= t.ofCeiling
}

type options struct {
	url, nats, pg  string
	serverDB       string
	pids           string
	seq            int
	oneRoom        int
	manyRooms      int
	syncRate       float64
	syncSends      int
	skipServer     bool
	skipCeilings   bool
	timeout        time.Duration
	scenarioLimit  time.Duration
	mediaFiles     int
	mediaClients   int
	reads          int
	oneRoomClients int
	manyClients    int
	roomCount      int
	syncSenders    int
	syncRooms      int
	initialSyncs   int
	emptySyncs     int
	fanoutMembers  int
	fanoutReps     int
	toDevice       int
	serviceSends   int
	serviceRate    float64
	// configs are the server's configuration files, for the rate limits it applies.
	configs []string
}

// Main runs `ganglion load` with its command-line arguments.
func Main(args []string) error {
	var o options
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8008", "base URL of the running homeserver (loopback only)")
	fs.StringVar(&o.nats, "nats", "", "NATS server for the JetStream ceilings (loopback only); empty starts an embedded one in a temporary directory")
	fs.StringVar(&o.pg, "pg", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "Postgres for the insert ceilings (loopback only); a scratch database is created on it and dropped")
	fs.StringVar(&o.serverDB, "server-db", "ganglion", "the server's Postgres database (on -pg's server), whose backends' CPU counts as the server's")
	fs.StringVar(&o.pids, "pids", "", "comma-separated ids of further processes whose CPU counts as the server's (e.g. an external nats-server); the process listening on -url's port is found by itself")
	fs.IntVar(&o.seq, "seq", 500, "sends of the sequential scenario (one client, one room)")
	fs.IntVar(&o.oneRoom, "one-room", 3000, "sends of the one-room scenario, over all its clients")
	fs.IntVar(&o.oneRoomClients, "one-room-clients", 10, "clients of the one-room scenario")
	fs.IntVar(&o.manyRooms, "many-rooms", 9600, "sends of the many-rooms scenario, over all its clients")
	fs.IntVar(&o.manyClients, "many-clients", 64, "clients of the many-rooms scenario")
	fs.IntVar(&o.roomCount, "rooms", 100, "rooms of the many-rooms scenario")
	fs.Float64Var(&o.syncRate, "sync-rate", 1000, "paced send rate (sends/s) of the send→sync scenario")
	fs.IntVar(&o.syncSends, "sync-sends", 5000, "sends of the send→sync scenario")
	fs.IntVar(&o.syncSenders, "sync-senders", 20, "senders (each in its own room) of the send→sync scenario")
	fs.IntVar(&o.syncRooms, "sync-rooms", 200, "rooms of the user whose /syncs scenarios (e) and (f) time")
	fs.IntVar(&o.initialSyncs, "initial-syncs", 20, "initial /syncs of scenario (e)")
	fs.IntVar(&o.emptySyncs, "empty-syncs", 1000, "incremental /syncs with nothing new of scenario (f)")
	fs.IntVar(&o.fanoutMembers, "fanout-members", 50, "long-polling members of the room of scenario (g)")
	fs.IntVar(&o.fanoutReps, "fanout-reps", 20, "typing notices and receipts of scenario (g), each")
	fs.IntVar(&o.serviceSends, "service-sends", 5000, "sends of scenario (i), into the rooms of (d) joined by the application service's user")
	fs.Float64Var(&o.serviceRate, "service-rate", 1000, "paced send rate (sends/s) of scenario (i)")
	fs.IntVar(&o.mediaFiles, "media-files", 200, "1 MiB files of scenario (j), uploaded and downloaded by -media-clients clients (0 skips it)")
	fs.IntVar(&o.mediaClients, "media-clients", 4, "clients of scenario (j)")
	fs.IntVar(&o.reads, "reads", 500, "reads of each kind in scenario (k): /messages, /context and /relations of 50 events (0 skips it)")
	fs.IntVar(&o.toDevice, "to-device", 20000, "to-device messages of scenario (h), each way of sending them, from -many-clients senders")
	fs.Func("c", "the server's configuration file, as given to ganglion run (repeatable): the run prints the rate limits it meets and refuses limits that would throttle it", func(v string) error {
		o.configs = append(o.configs, v)
		return nil
	})
	fs.BoolVar(&o.skipServer, "skip-server", false, "only measure the ceilings; no server needed")
	fs.BoolVar(&o.skipCeilings, "skip-ceilings", false, "only drive the server")
	fs.DurationVar(&o.scenarioLimit, "scenario-limit", 2*time.Minute, "time limit of each measured scenario")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Minute, "time limit of the whole run")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if o.manyClients > o.roomCount || o.syncSenders > o.roomCount || o.oneRoomClients > o.manyClients || o.syncSenders > o.manyClients {
		return errors.New("need one-room-clients, sync-senders <= many-clients <= rooms")
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	return run(ctx, os.Stdout, o)
}

func run(ctx context.Context, out io.Writer, o options) error {
	host, _ := os.Hostname()
	fmt.Fprintf(out, "ganglion load, %s on %s\n", time.Now().UTC().Format(time.RFC3339), host)
	bg := backgroundCores(time.Second)
	fmt.Fprintf(out, "machine: %d CPUs; busy before the run (everything else on the machine): %.2f cores\n", runtime.NumCPU(), bg)
	if bg > 0.2 {
		fmt.Fprintln(out, "warning: the machine is not idle; the figures below are lower than they would be")
	}
	event, err := sampleEvent()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "message: a %d-byte m.text content; the signed event (room v11) is %d bytes, the payload of the raw JetStream and Postgres figures\n\n", len(messageBody), len(event))

	var server *serverResults
	if !o.skipServer {
		cfg, err := checkRateLimits(out, o.configs, o)
		if err != nil {
			return err
		}
		svc, err := pickService(cfg.AppServices)
		if err != nil {
			return err
		}
		server, err = runServer(ctx, out, o, svc, cfg.Media.StorePath)
		if err != nil {
			return err
		}
	}
	var ceil *ceilings
	if !o.skipCeilings {
		ceil, err = measureCeilings(ctx, out, o, event)
		if err != nil {
			return err
		}
	}
	if server != nil {
		printServer(out, server, ceil)
	}
	return nil
}

// serverResults are the four scenarios against the running server.
type serverResults struct {
	sequential, oneRoom, manyRooms result
	toSync                         deliveryLatency
	roomSyncs                      roomSyncs
	fanout                         fanout
	toDevice                       [2]toDeviceRun
	// service is scenario (i), nil when no application service is registered.
	service *serviceRun
	// media is scenario (j), nil when skipped.
	media *mediaRun
	// reads is scenario (k), nil when skipped.
	reads  *readsRun
	labels [3]string
}

// runServer drives the server through scenarios (a) to (h), (i) when svc, a registered
// application service, is not nil, and (j) with the disk's speed measured in mediaDir.
func runServer(ctx context.Context, out io.Writer, o options, svc *appservice.Service, mediaDir string) (*serverResults, error) {
	u, err := url.Parse(o.url)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("-url %q: not a URL", o.url)
	}
	if err := checkLoopbackHost(u.Hostname()); err != nil {
		return nil, fmt.Errorf("-url: %w", err)
	}
	base := strings.TrimSuffix(o.url, "/")
	hs := newHomeserver(base)
	defer hs.http.CloseIdleConnections()
	if err := hs.ping(ctx); err != nil {
		return nil, fmt.Errorf("no homeserver answers at %s (start one with `go tool task run`): %w", base, err)
	}

	m, closeMeter, err := serverMeter(ctx, out, u, o)
	if err != nil {
		return nil, err
	}
	defer closeMeter()

	fmt.Fprintf(out, "server %s: setting up %d users and %d rooms\n", base, o.manyClients+2, o.roomCount+2)
	setup := time.Now()
	prefix := "load" + randomHex(4)
	users, err := hs.registerMany(ctx, prefix, o.manyClients)
	if err != nil {
		return nil, err
	}
	solo, err := hs.register(ctx, prefix+"_solo")
	if err != nil {
		return nil, err
	}
	receiver, err := hs.register(ctx, prefix+"_receiver")
	if err != nil {
		return nil, err
	}
	// Room j belongs to user j % clients, so every client of the many-rooms scenario
	// sends only to rooms it created and no joins are needed there.
	rooms := make([]id.RoomID, o.roomCount)
	errs := make(chan error, o.roomCount)
	sem := make(chan struct{}, 8)
	for j := range rooms {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			r, err := users[j%len(users)].createRoom(ctx)
			rooms[j] = r
			errs <- err
		}()
	}
	for range rooms {
		if err := <-errs; err != nil {
			return nil, err
		}
	}
	soloRoom, err := solo.createRoom(ctx)
	if err != nil {
		return nil, err
	}
	shared, err := users[0].createRoom(ctx)
	if err != nil {
		return nil, err
	}
	for _, u := range users[1:o.oneRoomClients] {
		if err := u.join(ctx, shared); err != nil {
			return nil, err
		}
	}
	for _, r := range rooms[:o.syncSenders] {
		if err := receiver.join(ctx, r); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(out, "setup took %s\n", time.Since(setup).Round(time.Millisecond))

	res := &serverResults{}
	res.labels = [3]string{
		"(a) sequential: 1 client, 1 room",
		fmt.Sprintf("(b) %d clients, 1 room", o.oneRoomClients),
		fmt.Sprintf("(c) %d clients, %d rooms", o.manyClients, o.roomCount),
	}

	fmt.Fprintf(out, "%s: %d sends\n", res.labels[0], o.seq)
	res.sequential, err = sendLoad(ctx, hs, m, res.labels[0], []*user{solo}, [][]id.RoomID{{soloRoom}}, o.seq, o.scenarioLimit)
	if err != nil {
		return nil, err
	}

	fmt.Fprintf(out, "%s: %d sends\n", res.labels[1], o.oneRoom)
	one := users[:o.oneRoomClients]
	oneRooms := make([][]id.RoomID, len(one))
	for i := range oneRooms {
		oneRooms[i] = []id.RoomID{shared}
	}
	res.oneRoom, err = sendLoad(ctx, hs, m, res.labels[1], one, oneRooms, o.oneRoom/len(one), o.scenarioLimit)
	if err != nil {
		return nil, err
	}

	fmt.Fprintf(out, "%s: %d sends\n", res.labels[2], o.manyRooms)
	own := make([][]id.RoomID, len(users))
	for j, r := range rooms {
		own[j%len(users)] = append(own[j%len(users)], r)
	}
	res.manyRooms, err = sendLoad(ctx, hs, m, res.labels[2], users, own, o.manyRooms/len(users), o.scenarioLimit)
	if err != nil {
		return nil, err
	}

	fmt.Fprintf(out, "(d) send→sync: %d sends at %.0f/s from %d clients in %d rooms, one /sync long-poll in all of them\n",
		o.syncSends, o.syncRate, o.syncSenders, o.syncSenders)
	sctx, cancel := context.WithTimeout(ctx, o.scenarioLimit)
	defer cancel()
	res.toSync, err = measureSendToSync(sctx, hs, m, receiver, users[:o.syncSenders], rooms[:o.syncSenders], o.syncRate, o.syncSends)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "(e), (f) /sync of a user in %d rooms: %d initial, %d incremental with nothing new\n", o.syncRooms, o.initialSyncs, o.emptySyncs)
	res.roomSyncs, err = measureRoomSyncs(ctx, hs, m, prefix, o.syncRooms, o.initialSyncs, o.emptySyncs)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "(g) typing and receipts to %d long-polling members of one room, %d each\n", o.fanoutMembers, o.fanoutReps)
	res.fanout, err = measureFanout(ctx, hs, m, prefix, o.fanoutMembers, o.fanoutReps)
	if err != nil {
		return nil, err
	}
	for i, per := range []int{1, 10} {
		fmt.Fprintf(out, "(h) to-device: %d messages from %d senders, %d per request; then 1,000 to one device\n", o.toDevice, o.manyClients, per)
		res.toDevice[i], err = measureToDevice(ctx, hs, m, prefix+strconv.Itoa(per), o.manyClients, o.toDevice, per, 1000)
		if err != nil {
			return nil, err
		}
	}
	if svc != nil {
		fmt.Fprintf(out, "(i) send→application service %s: %d sends at %.0f/s from %d clients in %d rooms its user joins\n",
			svc.ID, o.serviceSends, o.serviceRate, o.syncSenders, o.syncSenders)
		ictx, cancel := context.WithTimeout(ctx, o.scenarioLimit)
		defer cancel()
		r, err := measureAppService(ictx, hs, m, svc, users[:o.syncSenders], rooms[:o.syncSenders], o.serviceRate, o.serviceSends)
		if err != nil {
			return nil, err
		}
		res.service = &r
	}
	if o.mediaFiles > 0 {
		fmt.Fprintf(out, "(j) media: %d files of 1 MiB uploaded, then downloaded, by %d clients\n", o.mediaFiles, o.mediaClients)
		jctx, cancel := context.WithTimeout(ctx, o.scenarioLimit)
		defer cancel()
		r, err := measureMedia(jctx, hs, m, users[:min(o.mediaClients, len(users))], o.mediaFiles, mediaDir)
		if err != nil {
			return nil, err
		}
		res.media = &r
	}
	if o.reads > 0 {
		fmt.Fprintf(out, "(k) reads of 50 events: /messages, /context and /relations, %d times each, in a room of 232 events\n", o.reads)
		kctx, cancel := context.WithTimeout(ctx, o.scenarioLimit)
		defer cancel()
		r, err := measureReads(kctx, hs, m, solo, o.reads)
		if err != nil {
			return nil, err
		}
		res.reads = &r
	}
	fmt.Fprintln(out)
	return res, nil
}

// serverMeter counts the CPU of the server process (the one listening on the URL's
// port), of the processes -pids names, of the server database's Postgres backends, and
// of this program.
func serverMeter(ctx context.Context, out io.Writer, u *url.URL, o options) (*meter, func(), error) {
	m := &meter{}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if p, err := strconv.Atoi(port); err == nil {
		if pid := listenerPID(p); pid != 0 {
			m.pids = append(m.pids, pid)
		} else {
			fmt.Fprintf(out, "warning: no process found listening on port %s; the server's own CPU is not counted\n", port)
		}
	}
	if o.pids != "" {
		for f := range strings.SplitSeq(o.pids, ",") {
			pid, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				return nil, nil, fmt.Errorf("-pids: %w", err)
			}
			m.pids = append(m.pids, pid)
		}
	}
	closer := func() {}
	cfg, err := pgx.ParseConfig(o.pg)
	if err == nil && !strings.HasPrefix(cfg.Host, "/") {
		err = checkLoopbackHost(cfg.Host)
	}
	if err == nil {
		var conn *pgx.Conn
		if conn, err = pgx.ConnectConfig(ctx, cfg); err == nil {
			m.pg, m.dbs = conn, []string{o.serverDB}
			closer = func() { conn.Close(context.Background()) }
		}
	}
	if err != nil {
		fmt.Fprintf(out, "warning: Postgres's CPU is not counted (-pg: %v)\n", err)
	}
	fmt.Fprintf(out, "CPU counted for the server: %s\n", m.describe(ctx))
	return m, closer, nil
}

// ping checks that a Matrix server answers at the base URL.
func (hs *homeserver) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, hs.base+"/_matrix/client/versions", nil)
	if err != nil {
		return err
	}
	var v struct {
		Versions []string `json:"versions"`
	}
	return hs.do(req, &v)
}

// ceilings are the parts measured alone, and the paths computed from them.
type ceilings struct {
	build, http, jsSync, jsAsync, jsConsume, pgRow, pgRow8, pgBatch, pgCopy result
	// batched and synchronous are the CPU one event costs on each path.
	batched, synchronous time.Duration
}

// batchedRate is the ceiling of a fully batched path: the machine's cores divided by
// the CPU one event costs on it.
func (c *ceilings) batchedRate() float64 {
	if c == nil || c.batched <= 0 {
		return 0
	}
	return float64(runtime.NumCPU()) / c.batched.Seconds()
}

// ceilingRounds is how many times each part is measured; the round with the lowest CPU
// per operation is kept. A ceiling is the best the machine can do, and on a virtual
// machine with neighbours single rounds vary by a quarter or more.
const ceilingRounds = 3

// best runs f ceilingRounds times and keeps the result with the lowest CPU per
// operation.
func best(f func(round int) (result, error)) (result, error) {
	var keep result
	for round := range ceilingRounds {
		r, err := f(round)
		if err != nil {
			return r, err
		}
		if round == 0 || (r.cpuPerOp() > 0 && r.cpuPerOp() < keep.cpuPerOp()) {
			keep = r
		}
	}
	return keep, nil
}

func measureCeilings(ctx context.Context, out io.Writer, o options, event []byte) (*ceilings, error) {
	c := &ceilings{}
	var err error
	fmt.Fprintf(out, "ceilings: measuring the parts alone, best of %d rounds each\n", ceilingRounds)
	if c.build, err = best(func(int) (result, error) { return measureBuild(ctx, 2000) }); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if c.http, err = best(func(int) (result, error) { return measureHTTP(ctx, 12800, 64) }); err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}

	js, err := openJetStream(ctx, o.nats)
	if err != nil {
		return nil, err
	}
	jsWhere := js.where
	func() {
		defer js.close()
		if c.jsSync, err = best(func(int) (result, error) { return js.publishSync(ctx, event, 2000) }); err != nil {
			return
		}
		if c.jsAsync, err = best(func(int) (result, error) { return js.publishAsync(ctx, event, 20000) }); err != nil {
			return
		}
		c.jsConsume, err = best(func(int) (result, error) { return js.consume(ctx, 20000) })
	}()
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}

	pg, err := openPostgres(ctx, o.pg, event)
	if err != nil {
		return nil, err
	}
	pgWhere := pg.where
	func() {
		defer pg.close()
		// Each round writes rows with ids of its own, offset by the round.
		if c.pgRow, err = best(func(r int) (result, error) { return pg.insertPerRow(ctx, r*10_000, 1500, 1) }); err != nil {
			return
		}
		if c.pgRow8, err = best(func(r int) (result, error) { return pg.insertPerRow(ctx, 100_000+r*10_000, 3000, 8) }); err != nil {
			return
		}
		if c.pgBatch, err = best(func(r int) (result, error) { return pg.insertBatched(ctx, 200_000+r*100_000, 15000, 100) }); err != nil {
			return
		}
		c.pgCopy, err = best(func(r int) (result, error) { return pg.copyRows(ctx, 600_000+r*100_000, 30000, 1000) })
	}()
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}

	// One event on the fully batched path: its HTTP request, two asynchronous publishes
	// (the intent, then the log append), two consumer reads (the persister reads the
	// intent, the sync feed the log), building and signing it, and its row copied to
	// Postgres. The fully synchronous path waits for each publish and writes the row in
	// a transaction of its own.
	c.batched = c.http.cpuPerOp() + 2*c.jsAsync.cpuPerOp() + 2*c.jsConsume.cpuPerOp() + c.build.cpuPerOp() + c.pgCopy.cpuPerOp()
	c.synchronous = c.http.cpuPerOp() + 2*c.jsSync.cpuPerOp() + 2*c.jsConsume.cpuPerOp() + c.build.cpuPerOp() + c.pgRow.cpuPerOp()

	fmt.Fprintf(out, "\nCeilings of the parts on this machine (JetStream: %s; Postgres: %s).\n", jsWhere, pgWhere)
	fmt.Fprintln(out, "CPU/op is the CPU time of the processes involved (this program with any embedded NATS; an external nats-server; the scratch database's Postgres backends and Postgres's writer processes) divided by the operations.")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "part\tops\trate/s\tp50\tp99\tCPU/op\t")
	for _, r := range []result{c.http, c.build, c.jsSync, c.jsAsync, c.jsConsume, c.pgRow, c.pgRow8, c.pgBatch, c.pgCopy} {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t\n", r.name, r.ops, r.rate(), fmtDur(percentile(r.lat, 0.5)), fmtDur(percentile(r.lat, 0.99)), fmtDur(r.cpuPerOp()))
	}
	tw.Flush()
	fmt.Fprintf(out, "\nFully batched path, CPU per event = HTTP %s + 2 × async publish %s + 2 × consume %s + build %s + COPY row %s = %s\n",
		fmtDur(c.http.cpuPerOp()), fmtDur(c.jsAsync.cpuPerOp()), fmtDur(c.jsConsume.cpuPerOp()), fmtDur(c.build.cpuPerOp()), fmtDur(c.pgCopy.cpuPerOp()), fmtDur(c.batched))
	fmt.Fprintf(out, "  ceiling = %d cores / %s = %.0f events/s (DESIGN.md's estimate: about 7,700)\n", runtime.NumCPU(), fmtDur(c.batched), c.batchedRate())
	fmt.Fprintf(out, "Fully synchronous path, CPU per event = HTTP + 2 × sync publish %s + 2 × consume + build + 1-row transaction %s = %s\n",
		fmtDur(c.jsSync.cpuPerOp()), fmtDur(c.pgRow.cpuPerOp()), fmtDur(c.synchronous))
	if c.synchronous > 0 {
		fmt.Fprintf(out, "  ceiling = %d cores / %s = %.0f events/s (DESIGN.md's estimate: about 2,200)\n", runtime.NumCPU(), fmtDur(c.synchronous), float64(runtime.NumCPU())/c.synchronous.Seconds())
	}
	fmt.Fprintln(out)
	return c, nil
}

func printServer(out io.Writer, s *serverResults, c *ceilings) {
	ceiling := c.batchedRate()
	fmt.Fprintln(out, "The server, driven over HTTP from this program on the same machine.")
	fmt.Fprintln(out, "CPU/send is the CPU time of the counted processes (see above: server, its Postgres backends, this load generator) over the scenario divided by the sends.")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tsends\tsends/s\tp50\tp99\tCPU/send\tof ceiling\ttarget\t\t")
	for i, r := range []result{s.sequential, s.oneRoom, s.manyRooms} {
		target := []sendTarget{targetSequential, targetOneRoom, targetManyRooms}[i]
		verdict := "met"
		if !target.met(r, ceiling) {
			verdict = "short"
		}
		ratio := "-"
		if ceiling > 0 {
			ratio = fmt.Sprintf("%.2f", r.rate()/ceiling)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t\n", s.labels[i], r.ops, r.rate(), fmtDur(percentile(r.lat, 0.5)),
			fmtDur(percentile(r.lat, 0.99)), fmtDur(r.cpuPerOp()), ratio, target, verdict)
	}
	tw.Flush()
	t := s.toSync
	p99 := percentile(t.lat, 0.99)
	verdict := "met"
	if p99 > targetSyncP99 || t.missing > 0 {
		verdict = "short"
	}
	fmt.Fprintf(out, "(d) send→sync: %d sends at %.0f/s achieved; from the send's 200 to the event in the other client's /sync: p50 %s, p99 %s, max %s (target p99 ≤ %s: %s)\n",
		t.ops, t.sendRate, fmtDur(percentile(t.lat, 0.5)), fmtDur(p99), fmtDur(percentile(t.lat, 1)), targetSyncP99, verdict)
	fmt.Fprintf(out, "    from the send's request instead: p50 %s, p99 %s\n", fmtDur(percentile(t.fromRequest, 0.5)), fmtDur(percentile(t.fromRequest, 0.99)))
	fmt.Fprintf(out, "    %d events reached /sync before their 200 (counted as 0), %d never arrived, %d limited timelines; CPU/send %s",
		t.beforeSend, t.missing, t.limited, fmtDur(t.cpuPerOp()))
	if ceiling > 0 {
		fmt.Fprintf(out, "; paced rate is %.2f of the ceiling", t.sendRate/ceiling)
	}
	fmt.Fprintln(out)
	if ceiling > 0 {
		fmt.Fprintf(out, "\"of ceiling\" is sends/s divided by the fully batched path's ceiling above, %.0f events/s.\n", ceiling)
	}
	printRoomSyncs(out, s.roomSyncs)
	printFanout(out, s.fanout)
	for _, r := range s.toDevice {
		printToDevice(out, r)
	}
	printAppService(out, s.service)
	printMedia(out, s.media)
	printReads(out, s.reads)
}

// checkLoopbackHost refuses hosts that are not on this machine: a load test never
// leaves it.
func checkLoopbackHost(host string) error {
	if host == "" {
		return errors.New("no host")
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("%s is not a loopback address; the load test only drives this machine", host)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if !a.IP.IsLoopback() {
			return fmt.Errorf("%s resolves to %s, not a loopback address; the load test only drives this machine", host, a.IP)
		}
	}
	if len(addrs) == 0 {
		return fmt.Errorf("%s resolves to nothing", host)
	}
	return nil
}

// checkLoopbackURLs applies checkLoopbackHost to a comma-separated list of NATS URLs.
func checkLoopbackURLs(list string) error {
	for s := range strings.SplitSeq(list, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-nats %q: %w", s, err)
		}
		if err := checkLoopbackHost(u.Hostname()); err != nil {
			return fmt.Errorf("-nats: %w", err)
		}
	}
	return nil
}
