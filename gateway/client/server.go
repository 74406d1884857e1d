// Package client is the Matrix client-server API front door. It authenticates and
// validates requests, reads projections from Postgres, and turns every write to a room
// into an intent published to the room's shard; it never touches room state itself, so
// any gateway can serve any request.
package client

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/gateway/media"
	"github.com/ganglionhq/ganglion/gateway/ratelimit"
	"github.com/ganglionhq/ganglion/gateway/serve"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/accountdata"
	store "github.com/ganglionhq/ganglion/persist/media"
	"github.com/ganglionhq/ganglion/persist/notifications"
	"github.com/ganglionhq/ganglion/persist/presence"
	"github.com/ganglionhq/ganglion/persist/pushers"
	rulesdb "github.com/ganglionhq/ganglion/persist/pushrules"
	"github.com/ganglionhq/ganglion/persist/receipts"
	"github.com/ganglionhq/ganglion/persist/todevice"
	"github.com/ganglionhq/ganglion/persist/userdir"
	"github.com/ganglionhq/ganglion/processors/appservice"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// IntentSubmitter publishes an intent to its room's shard, or a write to its stream's
// writer, and waits for the answer. streams.IntentClient implements it.
type IntentSubmitter interface {
	Submit(ctx context.Context, in *schemas.Intent) (*schemas.IntentResult, error)
	Write(ctx context.Context, w *schemas.StreamWrite) (*schemas.IntentResult, error)
}

// Server serves the client-server API. Fields are set once before Handler is called.
type Server struct {
	ServerName string
	DB         *persist.DB
	Intents    IntentSubmitter
	// LogTail is the events log's last sequence when the process started: reads wait
	// (seeAnswered) until Postgres has everything up to it, which a writer recovering
	// after a crash projects.
	LogTail uint64
	// SharedBus says that other processes write to the streams this process reads
	// (its bus is not an embedded one of its own): an incremental /sync that answers
	// at once waits for every feed to show its stream's end (seeEnds), as a write
	// answered elsewhere can reach the client before the feed here reads it.
	SharedBus bool
	// Feed is the sync feed of the events log in this process; nil on processes that
	// do not serve /sync.
	Feed Feed
	// Evaluated is how far this process's pusher has evaluated the EVENTS log; nil
	// when it runs none (notification counts are then read as they are).
	Evaluated Evaluated
	// NoPushers says that no process evaluates push rules (pusher_instances empty,
	// start_pushers false): every count is 0, and /sync does not read them.
	NoPushers bool
	// StreamFeeds are the sync feeds of the per-user streams, by stream name.
	StreamFeeds map[string]Feed
	// Views are what /sync keeps in memory of the typing and receipts streams, kept
	// from their feeds.
	Views *Views
	// AppServices are the registered application services; AppServiceHTTP reaches
	// them (pings, user and alias queries).
	AppServices    *appservice.Services
	AppServiceHTTP *http.Client
	// EnableRegistration opens /register to anyone.
	EnableRegistration bool
	// ClientWellKnown is served at /.well-known/matrix/client; nil serves nothing.
	ClientWellKnown map[string]any
	// TURN is the turn_* configuration of /voip/turnServer.
	TURN TURN
	// RegistrationSharedSecret enables the admin API's shared-secret registration.
	RegistrationSharedSecret string
	// RefreshableTokenLifetime is how long an access token asked for with a refresh
	// token lasts (refreshable_access_token_lifetime; 5 minutes when 0).
	RefreshableTokenLifetime time.Duration
	// HTTP are the limits of the servers serving Handler; /sync extends their write
	// timeout by its longest wait.
	HTTP serve.Limits
	// RateLimits are Synapse's rc_* limits; the zero value limits nothing.
	RateLimits ratelimit.Settings
	// Presence is the presence section of the configuration; the zero value is
	// presence off.
	Presence userstreams.PresenceSettings
	// UserSyncs carries this process's sync notices to the presence writer; nil
	// leaves the writer unaware of syncs here.
	UserSyncs Notices
	// Media is the media repository this process serves; nil serves none
	// (enable_media_repo off, or a worker that is not a media repository).
	Media *media.Repo
	// UserDirectory is how user directory searches answer.
	UserDirectory UserDirectorySettings
	// Notices are the server notices' settings; no localpart, no notices.
	Notices ServerNotices
	Log     *zap.Logger

	limits *limiters
	tokens tokenCache
	writes ownWrites
	// answered is the highest events position answered here, or in the log when the
	// process started; caughtUp is set once the feed showed the latter (seeAnswered).
	answered    atomic.Uint64
	caughtUp    atomic.Bool
	syncStreams []syncStream
	accountData accountDataStore
	joinedCache joinedCache
	// filters are the parsed filters of /sync and /messages, by inline JSON or by
	// user and id (resolveFilter).
	filters       boundedMap[string, *filter]
	lazySent      lazySentCache
	pushRules     pushRulesStore
	pushers       pushersStore
	notifications notificationsStore
	receipts      receiptsStore
	presence      presenceStore
	userSyncs     *userSyncs
	toDevice      todevice.Store
	mediaStore    mediaStore
	deletions     deletions
	erased        erasedUsers
	userDir       userDirStore
	// streamWrites are the own writes of each per-user stream with a feed here.
	streamWrites map[string]*ownWrites
}

// Client API version prefixes, as listed by Synapse's worker routing table.
var (
	allVersions    = []string{"api/v1", "r0", "v3", "unstable"}
	modernVersions = []string{"r0", "v3", "unstable"}
	syncVersions   = []string{"r0", "v3"}
)

// router registers one handler under every version prefix an endpoint exists in, behind
// the check of the request's path and query strings.
type router struct{ mux *http.ServeMux }

// raw registers a handler at a path outside /_matrix/client/.
func (r router) raw(method, path string, h http.HandlerFunc) {
	r.mux.HandleFunc(method+" "+path, measured(method, path, storableParams(h)))
}

// handle registers a handler of the client API under each of versions; its metrics
// name the route once, whatever the version.
func (r router) handle(method, path string, versions []string, h http.HandlerFunc) {
	h = measured(method, "/_matrix/client/*"+path, storableParams(h))
	for _, v := range versions {
		r.mux.HandleFunc(method+" /_matrix/client/"+v+path, h)
	}
}

// Handler returns the HTTP handler of the client API.
func (s *Server) Handler() http.Handler {
	if s.Log == nil {
		s.Log = zap.NewNop()
	}
	s.limits = newLimiters(s.RateLimits)
	s.accountData = accountdata.Store{Pool: s.DB.Pool}
	s.toDevice = todevice.Store{Pool: s.DB.Pool}
	s.pushRules = rulesdb.Store{Pool: s.DB.Pool}
	s.pushers = pushers.Store{Pool: s.DB.Pool}
	s.notifications = notifications.Store{Pool: s.DB.Pool}
	s.receipts = receipts.Store{Pool: s.DB.Pool}
	if s.Views == nil {
		s.Views = NewViews()
	}
	s.presence = presence.Store{Pool: s.DB.Pool}
	s.mediaStore = store.Store{Pool: s.DB.Pool}
	s.erased.load = s.DB.ErasedUsers
	s.userDir = userdir.Store{Pool: s.DB.Pool}
	s.filters.max = maxCachedFilters
	s.answered.Store(s.LogTail)
	if s.UserSyncs != nil && s.Presence.Track() {
		s.userSyncs = newUserSyncs(s.UserSyncs, s.Presence.Timers, s.Log)
	}
	r := router{mux: http.NewServeMux()}
	s.registerAccounts(r)
	s.registerAccount(r)
	s.registerRooms(r)
	s.registerDirectory(r)
	s.registerRoomDirectory(r)
	s.registerRelations(r)
	s.registerSpaces(r)
	s.registerContext(r)
	s.registerSearch(r)
	s.registerUpgrade(r)
	s.registerCapabilities(r)
	s.registerProfile(r)
	s.registerSync(r)
	s.registerAccountData(r)
	s.registerKeys(r)
	s.registerPushRules(r)
	s.registerPushers(r)
	s.registerNotifications(r)
	s.registerTyping(r)
	s.registerReceipts(r)
	s.registerPresence(r)
	s.registerToDevice(r)
	s.registerDevices(r)
	s.registerAppServices(r)
	s.registerThirdParty(r)
	s.registerMedia(r)
	s.registerUserDirectory(r)
	s.registerAdmin(r)
	s.registerReports(r)
	s.registerOpenID(r)
	s.registerServerNotices(r)
	s.registerRoomDeletion(r)
	s.registerDiscovery(r)
	return s.frontDoor(r.mux)
}

// MediaHandler serves the media repository alone, for a listener with the media
// resource and not the client one. Call it after Handler.
func (s *Server) MediaHandler() http.Handler {
	r := router{mux: http.NewServeMux()}
	s.registerMedia(r)
	return s.frontDoor(r.mux)
}

// Run does, until ctx ends, the work of the server that outlives requests: telling the
// presence writer which devices sync here, and that none does once ctx ends. Call it
// after Handler.
func (s *Server) Run(ctx context.Context) {
	if s.userSyncs != nil {
		s.userSyncs.run(ctx)
	}
}

// frontDoor adds CORS and answers what no route matches with a Matrix error instead of
// net/http's plain-text one.
func (s *Server) frontDoor(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Origin, X-Requested-With, Content-Type, Accept, Authorization")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		status := http.StatusNotFound
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, p := mux.Handler(probe); p != "" {
				status = http.StatusMethodNotAllowed
				break
			}
		}
		matrix.WriteError(w, matrix.Errorf(status, matrix.CodeUnrecognized, "Unrecognized request"))
	})
}
