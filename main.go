// Command ganglion is the one binary of the Ganglion homeserver. Every process of a
// deployment runs it; its configuration decides which roles the process plays.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/http"
	_ "net/http/pprof" // served only when -pprof names an address
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/ganglionhq/ganglion/deployments/config"
	"github.com/ganglionhq/ganglion/deployments/load"
	"github.com/ganglionhq/ganglion/gateway/client"
	"github.com/ganglionhq/ganglion/gateway/federation"
	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/gateway/media"
	"github.com/ganglionhq/ganglion/gateway/serve"
	"github.com/ganglionhq/ganglion/persist"
	mediastore "github.com/ganglionhq/ganglion/persist/media"
	"github.com/ganglionhq/ganglion/persist/notifications"
	"github.com/ganglionhq/ganglion/processors/appservice"
	"github.com/ganglionhq/ganglion/processors/housekeeping"
	"github.com/ganglionhq/ganglion/processors/persister"
	"github.com/ganglionhq/ganglion/processors/pusher"
	"github.com/ganglionhq/ganglion/processors/replay"
	"github.com/ganglionhq/ganglion/processors/syncfeed"
	"github.com/ganglionhq/ganglion/processors/userdir"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/replication"
)

const usage = `usage: ganglion <command> [flags]

commands:
  run -c FILE [-c FILE...]   run a process (later files override earlier ones)
  generate-config [-server-name NAME] [-data-dir DIR] [-o FILE]
                             write a single-process configuration
  generate-keys -o FILE      write a new ed25519 signing key (Synapse's format)
  replay -c FILE [-c FILE...] [-into DSN [-verify]]
                             rebuild the Postgres projections from the events log
                             (stop the processes that use an embedded NATS store first);
                             -into rebuilds another database while the configured one
                             serves, -verify compares them table by table, room by room
  dead-letters -c FILE [-c FILE...] [-redeliver SEQ | -redeliver-all]
                             list the messages consumers gave up on, or send them back
  check-config -c FILE [-c FILE...] [-- -c FILE [-c FILE...]]... | [-workers DIR]
                             check each process's configuration, then all of them
                             together (one instance per name, the same stream writers);
                             with -workers, each other .yaml file of DIR is a worker's
  streams status -c FILE [-c FILE...]
                             every stream, consumer, position and dead letter of the bus
  consumer rewind -c FILE [-c FILE...] (-to-seq N | -since TIME) [-yes] NAME
                             make a running consumer of the events log (pusher_*,
                             appservice_*, user_directory_*) process it again from there
  persisters show|apply -c FILE [-c FILE...]
                             show the live list of event writers, or make the
                             configuration's stream_writers.events live while every
                             process runs (then wait for the writers taken out to drain)
  frontdoor [-listen ADDR] [-workers DIR] -c FILE [-c FILE...] [-- -c FILE...]...
                             a reverse proxy routing by Synapse's worker rules to the
                             processes of those files (one group of files per process)
  generate-nginx [-listen ADDR] [-o FILE] [-workers DIR] -c FILE [-- -c FILE...]...
                             the nginx configuration that routes as the front door does
  check-routing [-workers DIR] -c FILE [-c FILE...] [-- -c FILE...]...
                             read every process's request counts from its metrics
                             listener and check each endpoint was served where the
                             seed's routing sends it
  load [-url URL] [flags]    drive a running server and measure it (-h for flags)
  faults -c FILE [-c FILE...] [-schedule FILE] [-rate N] [-for D] [-url URL]
                             send at a steady rate through a running deployment while
                             a schedule kills and restarts its parts, then check that
                             every answered send is stored exactly once (-h for flags)
  register-user -c FILE [-c FILE...] -u NAME -p PASSWORD [-admin] [-url URL]
                             register a user with registration_shared_secret
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(os.Args[2:])
	case "generate-config":
		err = generateConfigCmd(os.Args[2:])
	case "generate-keys":
		err = generateKeysCmd(os.Args[2:])
	case "load":
		err = load.Main(os.Args[2:])
	case "faults":
		err = load.FaultsMain(os.Args[2:], func(cfg *config.Config) (jetstream.JetStream, streams.Topology, func(), error) {
			nc, js, err := dialRunningBus(cfg, "faults")
			if err != nil {
				return nil, streams.Topology{}, nil, err
			}
			return js, topology(cfg), nc.Close, nil
		})
	case "replay":
		err = replayCmd(os.Args[2:])
	case "dead-letters":
		err = deadLettersCmd(os.Args[2:])
	case "streams":
		err = streamsCmd(os.Args[2:])
	case "consumer":
		err = consumerCmd(os.Args[2:])
	case "persisters":
		err = persistersCmd(os.Args[2:])
	case "check-config":
		err = checkConfigCmd(os.Args[2:])
	case "frontdoor":
		err = frontDoorCmd(os.Args[2:])
	case "generate-nginx":
		err = generateNginxCmd(os.Args[2:])
	case "check-routing":
		err = checkRoutingCmd(os.Args[2:])
	case "register-user":
		err = registerUserCmd(os.Args[2:])
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "ganglion: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ganglion %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// fileList collects repeated -c flags.
type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

func generateConfigCmd(args []string) error {
	fs := flag.NewFlagSet("generate-config", flag.ContinueOnError)
	name := fs.String("server-name", "localhost", "the server name")
	dataDir := fs.String("data-dir", "data", "directory for the signing key and NATS files")
	out := fs.String("o", "", "output file (default: standard output)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	abs, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	data, err := config.Generate(*name, abs)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = os.Stdout.Write(data)
		return err
	}
	return os.WriteFile(*out, data, 0o600)
}

func generateKeysCmd(args []string) error {
	fs := flag.NewFlagSet("generate-keys", flag.ContinueOnError)
	out := fs.String("o", "", "output file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("-o FILE is required")
	}
	return config.GenerateSigningKey(*out)
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this address (for profiling)")
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return err
	}
	if cfg.IsEventWriter() {
		// An event writer signs with the key: a missing or bad one is a configuration
		// error, found before anything starts.
		if _, _, err := cfg.SigningKey(); err != nil {
			return err
		}
	}
	log := newLogger(cfg.LogLevel).With(zap.String("instance", cfg.InstanceName()))
	defer func() { _ = log.Sync() }()
	if *pprofAddr != "" {
		go func() { log.Warn("pprof stopped", zap.Error(http.ListenAndServe(*pprofAddr, nil))) }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runProcess(ctx, cfg, log)
}

// loadConfig parses a command's flags, with its -c files, and loads the configuration.
func loadConfig(fs *flag.FlagSet, args []string) (*config.Config, error) {
	var files fileList
	fs.Var(&files, "c", "configuration file (repeatable)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.New("at least one -c FILE is required")
	}
	return config.Load(files, newLogger(zapcore.InfoLevel))
}

// replayCmd rebuilds the projections of the configured database from the events log,
// or, with -into, of another database while the configured one serves; -verify then
// compares the two, table by table and room by room.
func replayCmd(args []string) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	into := fs.String("into", "", "rebuild into this database (a postgres:// URL, made when missing) instead of the configured one, which keeps serving")
	verify := fs.Bool("verify", false, "with -into: compare the rebuilt database with the configured one, catching up until they are equal")
	bus, err := openBusCommand(fs, args)
	if err != nil {
		return err
	}
	defer bus.close()
	ctx, cfg, js, log := bus.ctx, bus.cfg, bus.js, bus.log
	if *verify && *into == "" {
		return errors.New("-verify compares a rebuilt database with the configured one: give it with -into")
	}
	dsn := cfg.Database.DSN()
	if *into != "" {
		dsn = *into
	}
	if err := persist.EnsureDatabase(ctx, dsn, log); err != nil {
		return err
	}
	db, err := persist.Open(ctx, dsn, log)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := rebuild(ctx, cfg, js, db, log, true); err != nil {
		return err
	}
	if !*verify {
		if *into != "" {
			fmt.Printf("rebuilt %s; `ganglion replay -into ... -verify` compares it with the configured database\n", *into)
		}
		return nil
	}
	live, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer live.Close()
	return verifyRebuild(ctx, cfg, js, live, db, *into, log)
}

// rebuild projects the logs into db: the events log (with a progress line when shown)
// with the pushers' and the user directory's projections following it, and the
// per-user streams.
func rebuild(ctx context.Context, cfg *config.Config, js jetstream.JetStream, db *persist.DB, log *zap.Logger, show bool) error {
	start := time.Now()
	opt := replay.Options{Followers: map[string]replay.Follower{}}
	if show {
		opt.Progress = func(p replay.Progress) {
			secs := max(time.Since(start).Seconds(), 0.001)
			fmt.Fprintf(os.Stderr, "\rreplaying: %d of %d log messages (%.0f%%), %d events, %.0f events/s   ",
				p.Messages, p.Total, 100*float64(p.Messages)/float64(max(p.Total, 1)), p.Events, float64(p.Events)/secs)
		}
	}
	pushes := pusher.NewRebuild(db, cfg.ServerName, cfg.Pushers())
	opt.Followers["notifications"] = pushes
	if updater := cfg.UserDirectoryUpdater(); updater != "" {
		opt.Followers["user directory"] = userdir.NewRebuild(db, updater)
	}
	st, err := replay.RunWith(ctx, js, topology(cfg), db, log, opt)
	if show {
		fmt.Fprintln(os.Stderr)
	}
	if err != nil {
		return err
	}
	if show {
		took := time.Since(start)
		fmt.Printf("replayed %d log messages, %d events, %d records of the other streams in %s (%.0f events/s);"+
			" evaluated push rules again: %d notifications; positions %v\n", st.Messages, st.Events, st.Records,
			took.Round(time.Millisecond), float64(st.Events)/max(took.Seconds(), 0.001), pushes.Notifications, st.Positions)
		if _, ok := opt.Followers["user directory"]; ok {
			fmt.Println("rebuilt the user directory")
		}
	}
	return nil
}

// verifyRebuild compares the rebuilt database with the live one. The live one moves on
// while it serves, so the rebuilt one catches up from the logs before each comparison,
// a few times, until they are equal; what still differs then is in rooms that kept
// changing, to verify again at a quiet moment.
func verifyRebuild(ctx context.Context, cfg *config.Config, js jetstream.JetStream, live, rebuilt *persist.DB, into string, log *zap.Logger) error {
	const rounds = 5
	var diffs []persist.Difference
	for round := 1; round <= rounds; round++ {
		if round > 1 {
			time.Sleep(time.Second)
			if err := rebuild(ctx, cfg, js, rebuilt, log, false); err != nil {
				return err
			}
		}
		want, err := live.Digests(ctx)
		if err != nil {
			return err
		}
		got, err := rebuilt.Digests(ctx)
		if err != nil {
			return err
		}
		if diffs = persist.CompareDigests(want, got); len(diffs) == 0 {
			var rows, rooms int64
			for _, d := range want {
				rows += d.Rows
				rooms += int64(len(d.Rooms))
			}
			fmt.Printf("verified: %d tables, %d rows, %d room checksums equal to the configured database\n", len(want), rows, rooms)
			fmt.Printf("to switch over: set database to %s in every process's configuration and restart them one by one\n", into)
			return nil
		}
		fmt.Printf("round %d: %d differences (the configured database serves meanwhile); catching up\n", round, len(diffs))
	}
	for i, d := range diffs {
		if i == 20 {
			fmt.Printf("... and %d more\n", len(diffs)-20)
			break
		}
		fmt.Printf("  %s %s: %s\n", d.Table, d.Room, d.What)
	}
	return fmt.Errorf("%d differences after %d rounds: verify again at a quiet moment (with the event writers stopped, nothing moves)", len(diffs), rounds)
}

// busCommand is what an operator's command on the bus holds: its configuration, a
// context that ends with an interrupt, and the bus.
type busCommand struct {
	ctx   context.Context
	cfg   *config.Config
	log   *zap.Logger
	js    jetstream.JetStream
	close func()
}

// openBusCommand loads a command's configuration (its flags in fs) and opens the bus.
func openBusCommand(fs *flag.FlagSet, args []string) (*busCommand, error) {
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return nil, err
	}
	log := newLogger(cfg.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	_, js, closeBus, err := openNATS(cfg, log)
	if err != nil {
		stop()
		return nil, err
	}
	return &busCommand{ctx: ctx, cfg: cfg, log: log, js: js, close: func() { closeBus(); stop() }}, nil
}

// deadLettersCmd lists the dead-letter stream, or redelivers from it once the cause of
// the failures is fixed.
func deadLettersCmd(args []string) error {
	fs := flag.NewFlagSet("dead-letters", flag.ContinueOnError)
	one := fs.Uint64("redeliver", 0, "send dead letter SEQ back to its original subject")
	all := fs.Bool("redeliver-all", false, "send every dead letter back")
	limit := fs.Int("limit", 100, "list at most this many (-redeliver-all takes every one)")
	bus, err := openBusCommand(fs, args)
	if err != nil {
		return err
	}
	defer bus.close()
	ctx, cfg, js := bus.ctx, bus.cfg, bus.js
	stream := topology(cfg).DeadLetterStream()
	if *one != 0 {
		return streams.Redeliver(ctx, js, stream, *one)
	}
	if *all {
		// Everything there now, not only the first page of a listing.
		*limit = math.MaxInt
	}
	dls, err := streams.DeadLetters(ctx, js, stream, *limit)
	if err != nil {
		return err
	}
	if len(dls) == 0 {
		fmt.Println("no dead letters")
	}
	for _, dl := range dls {
		if *all {
			if err := streams.Redeliver(ctx, js, stream, dl.Seq); err != nil {
				return err
			}
			fmt.Printf("redelivered %d to %s\n", dl.Seq, dl.Subject)
			continue
		}
		fmt.Printf("%d\t%s seq %s\t%s\tdeliveries %s\t%s\n", dl.Seq, dl.Stream, dl.Msg.Header.Get(streams.HeaderDLQSequence),
			dl.Consumer, dl.Deliveries, dl.Error)
	}
	return nil
}

// serveUntilDone serves srv on ln until ctx ends, then shuts it down gracefully.
func serveUntilDone(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown)
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// logShutdown returns a task of a process's group that logs, once the group's context
// ends (by a signal, or a failed task), that the process is shutting down.
func logShutdown(ctx context.Context, log *zap.Logger) func() error {
	return func() error {
		<-ctx.Done()
		log.Info("shutting down", zap.NamedError("cause", context.Cause(ctx)))
		return nil
	}
}

// logStopped logs the end of a process.
func logStopped(ctx context.Context, log *zap.Logger) {
	log.Info("stopped", zap.NamedError("cause", context.Cause(ctx)))
}

func newLogger(level zapcore.Level) *zap.Logger {
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.Sampling = nil
	log, err := zc.Build()
	if err != nil {
		panic(err)
	}
	return log
}

// runProcess starts every role this process's configuration gives it and runs until
// ctx ends or a role fails.
func runProcess(ctx context.Context, cfg *config.Config, log *zap.Logger) error {
	db, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	nc, js, closeBus, err := openNATS(cfg, log)
	if err != nil {
		return err
	}
	defer closeBus()
	topo := topology(cfg)
	if err := topo.Ensure(ctx, js); err != nil {
		return err
	}
	// Rooms are sharded over the live list of event writers, which an operator changes
	// while every process runs (ganglion persisters apply).
	shards, err := streams.OpenShardMap(ctx, js, topo, cfg.EventWriters(), log)
	if err != nil {
		return err
	}
	info, err := topo.EventsInfo(ctx, js)
	if err != nil {
		return err
	}
	if err := db.CheckLog(ctx, info.Config.Name, info.Created, topo.EventsLastSeq(js)); err != nil {
		return err
	}

	if cfg.MaxJSONDepth > 0 {
		matrix.SetMaxJSONDepth(cfg.MaxJSONDepth)
	}
	g, ctx := errgroup.WithContext(ctx)
	waiters := &streams.Waiters{}
	instance := cfg.InstanceName()

	userStreams := userstreams.Streams(userstreams.Deps{DB: db, JS: js, Topology: topo, Log: log, Presence: cfg.Presence})
	var written []userstreams.Stream
	for name, writers := range cfg.UserStreamWriters() {
		if st := userStreams[name]; st != nil && slices.Contains(writers, instance) {
			written = append(written, st)
		}
	}
	// One Redis emitter carries every stream this process writes.
	var emitter *replication.Emitter
	if cfg.Redis.Enabled && (cfg.IsEventWriter() || len(written) > 0) {
		rc := redis.NewClient(&redis.Options{Addr: cfg.Redis.Addr(), Password: cfg.Redis.Password, DB: cfg.Redis.DBID})
		defer rc.Close()
		emitter = replication.New(rc, cfg.ServerName, instance, log)
		g.Go(func() error { emitter.Run(ctx); return nil })
	}
	if cfg.IsEventWriter() {
		keyID, key, err := cfg.SigningKey()
		if err != nil {
			return err
		}
		var sink persister.ReplicationSink
		if emitter != nil {
			sink = emitter
		}
		p := persister.New(persister.Config{
			Name: instance, ServerName: spec.ServerName(cfg.ServerName),
			KeyID: gomatrixserverlib.KeyID(keyID), Key: key,
			Topology: topo, JS: js, NC: nc, DB: db, Waiters: waiters, Shards: shards, Replication: sink, Log: log,
		})
		g.Go(func() error { return p.Run(ctx) })
	}
	for _, st := range written {
		var sink userstreams.ReplicationSink
		// Synapse has no accounts stream; its workers log an error for every
		// position of a stream they do not know.
		if emitter != nil && st.Name() != schemas.StreamAccounts {
			sink = emitter
		}
		w, err := userstreams.New(userstreams.Config{Name: instance, Stream: st, Topology: topo, JS: js, NC: nc, DB: db,
			Waiters: waiters, Replication: sink, Log: log})
		if err != nil {
			return err
		}
		g.Go(func() error { return w.Run(ctx) })
	}

	// A listener with the client resource serves the client API (and the media
	// repository, when this process serves it); one with only the media resource, the
	// media repository alone.
	var listeners, mediaListeners []config.Listener
	for _, l := range cfg.HTTPListeners() {
		switch {
		case l.Has("client"):
			listeners = append(listeners, l)
		case l.Has("media") && cfg.ServesMedia():
			mediaListeners = append(mediaListeners, l)
		}
	}
	var mediaRepo *media.Repo
	if cfg.ServesMedia() && len(listeners)+len(mediaListeners) > 0 {
		if mediaRepo, err = openMediaRepo(cfg, log); err != nil {
			return err
		}
		if cfg.RunsMediaJobs() {
			g.Go(func() error { mediaRepo.RunJobs(ctx, mediastore.Store{Pool: db.Pool}); return nil })
		}
	}
	isPusher := slices.Contains(cfg.Pushers(), instance)
	isAppServiceSender := cfg.AppServiceSender() == instance && len(cfg.AppServices.All()) > 0
	// One sync feed per stream serves every client listener of the process, its pusher
	// and its appservice sender.
	var feed *syncfeed.Feed
	streamFeeds := map[string]client.Feed{}
	views := client.NewViews()
	var ephemeral *appservice.Ephemeral
	if isAppServiceSender {
		ephemeral = appservice.NewEphemeral(cfg.AppServices)
	}
	if len(listeners) > 0 || isPusher || isAppServiceSender {
		feed, err = syncfeed.New(ctx, syncfeed.Config{JS: js, NC: nc, Topology: topo, DB: db, Log: log, Writers: shards.Writers()})
		if err != nil {
			return err
		}
		g.Go(func() error { return feed.Run(ctx) })
		for name, writers := range cfg.UserStreamWriters() {
			// The accounts stream shows nothing in /sync, and its writer answers once
			// its records are in Postgres, where every reader looks: no feed follows it.
			if userStreams[name] == nil || name == schemas.StreamAccounts {
				continue
			}
			// /sync answers typing, and recent receipts, from memory: their feeds hand
			// it every record.
			fc := syncfeed.Config{JS: js, NC: nc, Topology: topo, DB: db, Log: log, Stream: name, Writers: writers,
				Observe: observeAll(views.Observer(name), ephemeral.Observer(name))}
			f, err := syncfeed.New(ctx, fc)
			if err != nil {
				return err
			}
			g.Go(func() error { return f.Run(ctx) })
			streamFeeds[name] = f
		}
	}
	intents := &streams.IntentClient{Topology: topo, JS: js, NC: nc, Shards: shards,
		StreamWriters: cfg.UserStreamWriters(), Waiters: waiters, Log: log}
	if cfg.BackgroundTasksOn() == instance {
		g.Go(func() error {
			return housekeeping.Run(ctx, housekeeping.Config{JS: js, Topology: topo, Shards: shards, Log: log.Named("housekeeping")})
		})
	}
	if isPusher {
		p, err := pusher.New(pusher.Config{Name: instance, Instances: cfg.Pushers(), ServerName: cfg.ServerName, Topology: topo,
			JS: js, NC: nc, DB: db, Projection: feed, Rules: streamFeeds[schemas.StreamPushRules],
			Outbound: pusher.NewOutboundClient(cfg.IPRangeBlacklist, cfg.IPRangeWhitelist, pusher.DeliveryTimeout), Intents: intents, Log: log})
		if err != nil {
			return err
		}
		g.Go(func() error { return p.Run(ctx) })
	}
	// Application services are reached like push gateways, with Synapse's 60 seconds for
	// a transaction.
	services := pusher.NewOutboundClient(cfg.IPRangeBlacklist, cfg.IPRangeWhitelist, appservice.RequestTimeout)
	if cfg.UserDirectoryUpdater() == instance {
		dir, err := userdir.New(userdir.Config{Name: instance, Topology: topo, JS: js, DB: db, Control: nc, Log: log})
		if err != nil {
			return err
		}
		g.Go(func() error { return dir.Run(ctx) })
	}
	if isAppServiceSender {
		sender := appservice.NewSender(appservice.Config{Services: cfg.AppServices, Topology: topo, JS: js, DB: db, Control: nc,
			Projection: feed, Client: services, Ephemeral: ephemeral, Log: log})
		g.Go(func() error { return sender.Run(ctx) })
	}
	var clientHandler, mediaHandler http.Handler
	if len(listeners)+len(mediaListeners) > 0 {
		// /sync counts notifications once its user's pusher has evaluated what it shows.
		var evaluated client.Evaluated
		if pushers := cfg.Pushers(); len(pushers) > 0 {
			known, err := db.StreamPositions(ctx, notifications.Stream)
			if err != nil {
				return err
			}
			followed, stop, err := streams.Follow(nc, topo, notifications.Stream, pushers, known)
			if err != nil {
				return err
			}
			defer stop()
			evaluated = followed
		}
		logTail, err := lastSeq(ctx, js, topo.EventsStream())
		if err != nil {
			return err
		}
		api := &client.Server{
			ServerName: cfg.ServerName, DB: db, Evaluated: evaluated, NoPushers: len(cfg.Pushers()) == 0, LogTail: logTail, SharedBus: cfg.NATS.Embedded == nil || cfg.NATS.Embedded.Port != 0, StreamFeeds: streamFeeds, Views: views, Log: log, EnableRegistration: cfg.EnableRegistration,
			Intents: intents, AppServices: cfg.AppServices, AppServiceHTTP: services,
			HTTP: cfg.HTTPLimits, RateLimits: cfg.RateLimits, Presence: cfg.Presence,
			UserSyncs: streams.Notices{NC: nc, Subject: topo.UserSyncSubject(cfg.StreamWriters.Presence[0])},
			Media:     mediaRepo,
			UserDirectory: client.UserDirectorySettings{Enabled: cfg.UserDirectory.Enabled,
				SearchAllUsers: cfg.UserDirectory.SearchAllUsers},
			RefreshableTokenLifetime: cfg.RefreshableTokenLifetime,
			RegistrationSharedSecret: cfg.RegistrationSharedSecret,
			Notices:                  client.ServerNotices(cfg.ServerNotices),
			ClientWellKnown:          cfg.Discovery.ClientWellKnown(),
			TURN: client.TURN{URIs: cfg.Discovery.TURNURIs, SharedSecret: cfg.Discovery.TURNSharedSecret,
				Username: cfg.Discovery.TURNUsername, Password: cfg.Discovery.TURNPassword, UserLifetime: cfg.Discovery.TURNUserLifetime},
		}
		if feed != nil {
			// A media repository worker follows no stream.
			api.Feed = feed
		}
		clientHandler, mediaHandler = api.Handler(), api.MediaHandler()
		g.Go(func() error { api.Run(ctx); return nil })
		// What another process revokes or erases counts here as its records pass.
		revocations, err := nc.Subscribe(topo.UserStreamWildcard(schemas.StreamAccounts), func(m *nats.Msg) {
			if r, err := schemas.DecodeAccounts(m.Data); err == nil {
				api.AccountsRecordElsewhere(r)
			}
		})
		if err != nil {
			return fmt.Errorf("subscribing to the accounts stream: %w", err)
		}
		defer func() { _ = revocations.Unsubscribe() }()
	}
	fed := (&federation.Server{Tokens: db, Log: log}).Handler()
	listen := func(l config.Listener, handler http.Handler, what string) error {
		h, perIP := handler, cfg.HTTPLimits.MaxConnsPerIP
		if l.XForwarded {
			// Behind a reverse proxy every connection comes from the proxy, which
			// caps per client itself; the client's address is in X-Forwarded-For.
			h, perIP = serve.ForwardedFor(handler), 0
		}
		for _, addr := range l.Addrs() {
			ln, err := serve.Listen(addr, perIP, log)
			if err != nil {
				return fmt.Errorf("listener %s: %w", addr, err)
			}
			srv := serve.New(h, cfg.HTTPLimits, log)
			log.Info(what+" listening", zap.String("addr", ln.Addr().String()))
			g.Go(func() error { return serveUntilDone(ctx, srv, ln) })
		}
		return nil
	}
	for _, l := range cfg.HTTPListeners() {
		if handler := listenerHandler(l, clientHandler, mediaHandler, fed, serve.Replication(cfg.WorkerReplicationSecret)); handler != nil {
			if err := listen(l, handler, "HTTP API"); err != nil {
				return err
			}
		}
	}
	for _, l := range cfg.MetricsListeners() {
		mux := http.NewServeMux()
		mux.Handle("GET /_synapse/metrics", promhttp.Handler())
		if err := listen(l, mux, "metrics"); err != nil {
			return err
		}
	}
	log.Info("process started", zap.String("server_name", cfg.ServerName), zap.Bool("event_writer", cfg.IsEventWriter()))
	g.Go(logShutdown(ctx, log))
	err = g.Wait()
	logStopped(ctx, log)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// openMediaRepo opens the media store (media_store_path) and the repository over it.
func openMediaRepo(cfg *config.Config, log *zap.Logger) (*media.Repo, error) {
	files := mediastore.Files{Root: cfg.Media.StorePath}
	if err := files.Init(); err != nil {
		return nil, err
	}
	mc := cfg.Media.Config
	if cfg.Media.URLPreviews {
		client := pusher.NewOutboundClient(cfg.Media.URLPreviewBlacklist, cfg.Media.URLPreviewWhitelist, media.PreviewTimeout)
		client.CheckRedirect = media.FollowRedirects
		mc.Preview = &media.Previewer{Client: client, MaxSize: cfg.Media.MaxSpiderSize, UserAgent: "Ganglion (bot; +https://github.com/ganglionhq/ganglion)"}
	}
	return media.NewRepo(mc, files, log.Named("media")), nil
}

// topology is the configured shape of the bus: its namespace and stream bounds.
func topology(cfg *config.Config) streams.Topology {
	return streams.Topology{Namespace: cfg.NATS.Namespace, ToDevicePerDevice: cfg.MaxToDevicePerDevice, Replicas: cfg.NATS.Replicas}
}

// openDatabase creates the configured database when it does not exist yet, then opens
// it with its migrations applied.
func openDatabase(ctx context.Context, cfg *config.Config, log *zap.Logger) (*persist.DB, error) {
	if err := persist.EnsureDatabase(ctx, cfg.Database.DSN(), log); err != nil {
		return nil, err
	}
	db, err := persist.Open(ctx, cfg.Database.DSN(), log)
	if err != nil {
		return nil, err
	}
	if cfg.BcryptRounds > 0 {
		db.BcryptCost = cfg.BcryptRounds
	}
	return db, nil
}

// openNATS connects to the configured NATS server (starting the embedded one when
// configured) and returns JetStream on it and a function that closes both.
func openNATS(cfg *config.Config, log *zap.Logger) (*nats.Conn, jetstream.JetStream, func(), error) {
	nc, embedded, err := connectNATS(cfg, log)
	if err != nil {
		return nil, nil, nil, err
	}
	closeBus := func() {
		nc.Close()
		if embedded != nil {
			embedded.Shutdown()
			embedded.WaitForShutdown()
		}
	}
	// The event writer bounds its own wait for an append's ack; this bound frees the
	// client's bookkeeping of acks that never come.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(persister.DefaultAppendTimeout))
	if err != nil {
		closeBus()
		return nil, nil, nil, err
	}
	return nc, js, closeBus, nil
}

// connectNATS connects to the configured NATS server, starting the embedded one first
// when configured; an embedded server is reached in-process, without TCP.
func connectNATS(cfg *config.Config, log *zap.Logger) (*nats.Conn, *server.Server, error) {
	name := "ganglion-" + cfg.InstanceName()
	if e := cfg.NATS.Embedded; e != nil {
		ns, err := streams.StartEmbedded(streams.EmbeddedOptions{
			StoreDir: e.StoreDir, Port: e.Port, SyncInterval: e.SyncInterval, SyncAlways: e.SyncAlways,
		})
		if err != nil {
			return nil, nil, err
		}
		nc, err := streams.ConnectEmbedded(ns, name)
		if err != nil {
			ns.Shutdown()
			return nil, nil, err
		}
		log.Info("embedded NATS started", zap.String("store_dir", e.StoreDir), zap.Int("port", e.Port))
		return nc, ns, nil
	}
	nc, err := nats.Connect(cfg.NATS.URL, nats.Name(name),
		// Reconnect forever, trying every 250 ms (plus jitter, so a restarted server is
		// not hit by every process at once): a process without NATS can do nothing.
		nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond), nats.ReconnectJitter(250*time.Millisecond, time.Second),
		// The default 8 MiB reconnect buffer stays: core publishes made during a short
		// outage (answers to other gateways, progress notices) go out once the
		// connection is back; JetStream publishes are retried by their callers anyway.
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if !nc.IsClosed() { // closing at shutdown disconnects too
				log.Warn("NATS connection lost; reconnecting", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connection back", zap.String("url", nc.ConnectedUrlRedacted()))
		}),
		nats.ClosedHandler(func(*nats.Conn) { log.Info("NATS connection closed") }),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("nats: %w", err)
	}
	return nc, nil, nil
}

// lastSeq is the last sequence of a stream.
func lastSeq(ctx context.Context, js jetstream.JetStream, stream string) (uint64, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	return info.State.LastSeq, nil
}

// observeAll hands a feed's records to each of fns that is not nil, in turn; nil when
// none is.
func observeAll(fns ...func(seq uint64, h nats.Header, data []byte)) func(seq uint64, h nats.Header, data []byte) {
	fns = slices.DeleteFunc(fns, func(fn func(uint64, nats.Header, []byte)) bool { return fn == nil })
	switch len(fns) {
	case 0:
		return nil
	case 1:
		return fns[0]
	}
	return func(seq uint64, h nats.Header, data []byte) {
		for _, fn := range fns {
			fn(seq, h, data)
		}
	}
}

// listenerHandler is what an HTTP listener serves: the client API with the client
// resource (the media repository within it when this process serves media), the media
// repository alone with only the media resource (nil when this process serves none),
// and the federation API besides with the federation or openid resource; /health on
// each. Nil when it serves nothing here.
func listenerHandler(l config.Listener, clientHandler, mediaHandler, fed, replication http.Handler) http.Handler {
	var h http.Handler
	switch {
	case l.Has("client"):
		h = clientHandler
	case l.Has("media"):
		h = mediaHandler
	}
	if l.Has("federation") || l.Has("openid") {
		h = serve.Mount(federation.Prefix, fed, h)
	}
	if l.Has("replication") {
		h = serve.Mount(serve.ReplicationPrefix, replication, h)
	}
	if h == nil {
		return nil
	}
	return serve.Health(h)
}
