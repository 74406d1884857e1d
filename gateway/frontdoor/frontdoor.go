// Package frontdoor is a reverse proxy that applies Synapse's worker routing rules
// (Rules) in front of Ganglion's processes, for operators without an nginx of their own,
// and writes the equivalent nginx configuration (WriteNginx). Which processes take which
// requests comes from the deployment's configuration files (deployments/config.Routes):
// /sync by user to the sync workers, the stream writers' endpoints to their writer,
// inbound federation by origin, and the rest round robin.
//
// Upstreams are health-checked (GET /health): one that fails a check, or a connection,
// leaves the rotation until a check passes again, and an idempotent request that could
// not reach its upstream is retried on another of its group.
package frontdoor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/serve"
)

// Upstream is one listener of one process.
type Upstream struct {
	// Name identifies it in logs and hashing: its instance name, with the port when
	// the instance has several listeners in the table.
	Name string
	URL  *url.URL
}

// Table says which upstreams take each group's requests. Groups missing from it take
// their Fallback's (see Complete).
type Table map[Group][]Upstream

// Complete returns the table with every group that has no upstreams of its own given
// its fallback's, and an error when no upstream takes the Client group.
func (t Table) Complete() (Table, error) {
	if len(t[Client]) == 0 {
		return nil, errors.New("no listener takes the client group: at least one process needs a listener with the client resource")
	}
	out := Table{}
	for _, g := range Groups {
		for at := g; len(out[g]) == 0; {
			out[g] = t[at]
			next, ok := Fallback[at]
			if !ok {
				break
			}
			at = next
		}
	}
	return out, nil
}

// Options tune a Router; zero values take the defaults.
type Options struct {
	// HealthInterval is how often each upstream's /health is checked (500 ms), and
	// HealthTimeout how long a check may take (1 s): a dead upstream leaves the
	// rotation within their sum.
	HealthInterval, HealthTimeout time.Duration
	// MaxReplayBody is the largest request body kept to retry an idempotent request
	// on another upstream (1 MiB); larger bodies are not retried.
	MaxReplayBody int64
	// Limits are those of the server serving the Router: long polls extend its write
	// timeout.
	Limits serve.Limits
	Log    *zap.Logger
}

// Router routes requests to a deployment's upstreams.
type Router struct {
	opts     Options
	groups   atomic.Pointer[map[Group][]*backend]
	proxy    http.Handler
	longPoll http.Handler
	next     sync.Map // Group -> *atomic.Uint64, the round robin position

	mu sync.Mutex
	// backends are the upstreams of the table in use, by URL; checking says that Run
	// checks their health, each until its stop is called.
	backends map[string]*backend
	checking bool
	checks   sync.WaitGroup
	runCtx   context.Context
}

// backend is one upstream and its health, shared by every group it is in.
type backend struct {
	Upstream
	down atomic.Bool
	stop context.CancelFunc
}

// New returns a Router for table, which Complete fills in.
func New(table Table, opts Options) (*Router, error) {
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = 500 * time.Millisecond
	}
	if opts.HealthTimeout <= 0 {
		opts.HealthTimeout = time.Second
	}
	if opts.MaxReplayBody <= 0 {
		opts.MaxReplayBody = 1 << 20
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	rt := &Router{opts: opts, backends: map[string]*backend{}}
	if _, _, err := rt.Reload(table); err != nil {
		return nil, err
	}
	rt.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(pr.In.Context().Value(attemptKey{}).(*attempt).backend.URL)
			pr.SetXForwarded()
		},
		ErrorHandler: func(_ http.ResponseWriter, r *http.Request, err error) {
			// Nothing has been written: the handler decides between a retry and a 502.
			r.Context().Value(attemptKey{}).(*attempt).err = err
		},
	}
	rt.longPoll = serve.LongPoll(rt.proxy, opts.Limits)
	return rt, nil
}

// Reload routes by table from now on, which Complete fills in: as an operator adds a
// sync worker or a gateway and tells the front door (SIGHUP). An upstream in both the
// old and the new table keeps its health; a new one is checked at once and an old one
// no more. Requests already sent finish where they went. It returns the upstreams
// added and removed, by name.
func (rt *Router) Reload(table Table) (added, removed []string, err error) {
	table, err = table.Complete()
	if err != nil {
		return nil, nil, err
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	groups := map[Group][]*backend{}
	kept := map[string]*backend{}
	for _, g := range Groups {
		for _, u := range table[g] {
			key := u.URL.String()
			b, ok := kept[key]
			if !ok {
				if b, ok = rt.backends[key]; !ok || b.Name != u.Name {
					b = &backend{Upstream: u}
					added = append(added, u.Name)
					rt.startCheck(b)
				}
				kept[key] = b
			}
			groups[g] = append(groups[g], b)
		}
	}
	for key, b := range rt.backends {
		if kept[key] != b {
			removed = append(removed, b.Name)
			if b.stop != nil {
				b.stop()
			}
		}
	}
	rt.backends = kept
	rt.groups.Store(&groups)
	return added, removed, nil
}

type attemptKey struct{}

// attempt is one try of a request on one backend.
type attempt struct {
	backend *backend
	err     error
}

// Run checks the upstreams' health until ctx ends, those of later Reloads too.
func (rt *Router) Run(ctx context.Context) {
	rt.mu.Lock()
	rt.runCtx, rt.checking = ctx, true
	for _, b := range rt.backends {
		rt.startCheck(b)
	}
	rt.mu.Unlock()
	<-ctx.Done()
	rt.mu.Lock()
	rt.checking = false
	rt.mu.Unlock()
	rt.checks.Wait()
}

// startCheck checks b's health every HealthInterval until its stop, once Run runs;
// rt.mu is held.
func (rt *Router) startCheck(b *backend) {
	if !rt.checking || b.stop != nil {
		return
	}
	ctx, stop := context.WithCancel(rt.runCtx)
	b.stop = stop
	client := &http.Client{Timeout: rt.opts.HealthTimeout}
	rt.checks.Go(func() {
		tick := time.NewTicker(rt.opts.HealthInterval)
		defer tick.Stop()
		for {
			rt.check(ctx, client, b)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
}

// check asks b's /health and records the answer.
func (rt *Router) check(ctx context.Context, client *http.Client, b *backend) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.URL.JoinPath("/health").String(), nil)
	if err != nil {
		return
	}
	resp, err := client.Do(req)
	if ctx.Err() != nil {
		return
	}
	if err == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("/health answered %d", resp.StatusCode)
		}
	}
	if err != nil {
		rt.markDown(b, err)
		return
	}
	if b.down.Swap(false) {
		rt.opts.Log.Info("upstream back in rotation", zap.String("upstream", b.Name), zap.String("url", b.URL.String()))
	}
}

func (rt *Router) markDown(b *backend, err error) {
	if !b.down.Swap(true) {
		rt.opts.Log.Warn("upstream out of rotation", zap.String("upstream", b.Name), zap.String("url", b.URL.String()), zap.Error(err))
	}
}

// Pick returns the upstream for route, skipping those in tried: the healthy one the key
// ranks first (rendezvous hashing, so adding one of N upstreams moves only 1/N of the
// keys, and a dead one's keys spread over the rest), or round robin without a key. When
// every untried upstream is down it picks among them anyway, since a check may lag.
func (rt *Router) Pick(route Route, tried []*backend) *backend {
	var live, all []*backend
	for _, b := range (*rt.groups.Load())[route.Group] {
		if slices.Contains(tried, b) {
			continue
		}
		all = append(all, b)
		if !b.down.Load() {
			live = append(live, b)
		}
	}
	if len(live) == 0 {
		live = all
	}
	if len(live) == 0 {
		return nil
	}
	if route.Key == "" {
		n, _ := rt.next.LoadOrStore(route.Group, new(atomic.Uint64))
		return live[(n.(*atomic.Uint64).Add(1)-1)%uint64(len(live))]
	}
	best, bestScore := live[0], uint64(0)
	for _, b := range live {
		if s := score(route.Key, b.Name); s > bestScore {
			best, bestScore = b, s
		}
	}
	return best
}

// score is the rendezvous weight of key on the upstream named name: FNV-1a of both,
// finished with SplitMix64's mixer so that similar names spread.
func score(key, name string) uint64 {
	h := fnv.New64a()
	_, _ = io.WriteString(h, key)
	_, _ = h.Write([]byte{0})
	_, _ = io.WriteString(h, name)
	z := h.Sum64()
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// idempotent methods may be sent twice without harm (RFC 9110 §9.2.2; Matrix's PUTs
// carry a transaction ID for the same reason).
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// ServeHTTP routes r.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := Classify(r)
	if route.Refused {
		writeError(w, http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request")
		return
	}
	handler := rt.proxy
	if route.LongPoll {
		handler = rt.longPoll
	}
	retry := idempotent(r.Method)
	var body []byte
	if retry && r.Body != nil && r.Body != http.NoBody {
		// Keep the body to send again; one too large to keep is sent once.
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, rt.opts.MaxReplayBody+1))
		if err != nil {
			writeError(w, http.StatusBadRequest, "M_UNKNOWN", "the request body could not be read")
			return
		}
		if int64(len(body)) > rt.opts.MaxReplayBody {
			retry = false
			r.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
			body = nil
		}
	}
	var tried []*backend
	for {
		b := rt.Pick(route, tried)
		if b == nil {
			if len(tried) == 0 {
				writeError(w, http.StatusNotFound, "M_UNRECOGNIZED", "no process of this deployment serves this request")
			} else {
				writeError(w, http.StatusBadGateway, "M_UNKNOWN", "the homeserver process for this request is unreachable")
			}
			return
		}
		at := &attempt{backend: b}
		req := r.WithContext(context.WithValue(r.Context(), attemptKey{}, at))
		if body != nil {
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
		handler.ServeHTTP(w, req)
		switch {
		case at.err == nil:
			return
		case r.Context().Err() != nil:
			// The client went away (a long poll given up): no upstream failed.
			rt.opts.Log.Debug("client cancelled", zap.String("path", r.URL.Path), zap.Error(at.err))
			return
		}
		rt.markDown(b, at.err)
		tried = append(tried, b)
		if !retry {
			writeError(w, http.StatusBadGateway, "M_UNKNOWN", "the homeserver process for this request is unreachable")
			return
		}
		rt.opts.Log.Info("retrying elsewhere", zap.String("path", r.URL.Path), zap.String("upstream", b.Name), zap.Error(at.err))
	}
}

func writeError(w http.ResponseWriter, status int, errcode, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"errcode":%q,"error":%q}`, errcode, msg)
}
