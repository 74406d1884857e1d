package load

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/ganglionhq/ganglion/processors/appservice"
)

// targetServiceP99 is issue 9's bound on delivery to an application service: from the
// send's 200 to the event in a transaction, at 1,000 sends/s.
const targetServiceP99 = 20 * time.Millisecond

// serviceRun is scenario (i): paced sends into rooms an application service is in, and
// when each event reached the service.
type serviceRun struct {
	deliveryLatency
	service string
	txns    int64
}

// pickService returns the first registered service with a url on this machine, or nil.
func pickService(services *appservice.Services) (*appservice.Service, error) {
	for _, svc := range services.All() {
		if svc.URL == "" {
			continue
		}
		u, err := url.Parse(svc.URL)
		if err != nil {
			return nil, fmt.Errorf("application service %s: url: %w", svc.ID, err)
		}
		if err := checkLoopbackHost(u.Hostname()); err != nil {
			return nil, fmt.Errorf("application service %s: %w", svc.ID, err)
		}
		return svc, nil
	}
	return nil, nil
}

// measureAppService plays the service svc (listening on its url) while senders send at
// rate into their rooms, which the service's own user joins first; each latency is
// from the send's 200 to the transaction carrying the event.
func measureAppService(ctx context.Context, hs *homeserver, m *meter, svc *appservice.Service, senders []*user, rooms []id.RoomID, rate float64, n int) (serviceRun, error) {
	out := serviceRun{service: svc.ID}
	u, err := url.Parse(svc.URL)
	if err != nil {
		return out, err
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return out, fmt.Errorf("application service %s: listen on its url: %w", svc.ID, err)
	}
	var deliver atomic.Pointer[func(eventID string, at time.Time)]
	srv := &http.Server{Handler: serviceHandler(svc.ServerToken, &out.txns, &deliver), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	// The service's own user joins every room, so the service is sent their events.
	mx, err := mautrix.NewClient(hs.base, id.UserID(svc.SenderID), svc.AppToken)
	if err != nil {
		return out, err
	}
	mx.Client = hs.http
	bot := &user{id: id.UserID(svc.SenderID), token: svc.AppToken, mx: mx, txnPrefix: randomHex(4)}
	for _, r := range rooms {
		if err := bot.join(ctx, r); err != nil {
			return out, err
		}
	}
	watch := func(ctx context.Context, seen func(eventID string, at time.Time)) error {
		deliver.Store(&seen)
		<-ctx.Done()
		deliver.Store(nil)
		return nil
	}
	out.deliveryLatency, err = measurePaced(ctx, hs, m, "send→service", senders, rooms, rate, n, watch)
	return out, err
}

// serviceHandler answers the homeserver's transactions as a service does, handing each
// event to the deliver function set at the time and counting the transactions while
// one is.
func serviceHandler(hsToken string, txns *int64, deliver *atomic.Pointer[func(string, time.Time)]) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		if !strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/transactions/") || r.Method != http.MethodPut {
			http.Error(w, `{"errcode":"M_UNRECOGNIZED"}`, http.StatusNotFound)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+hsToken {
			http.Error(w, `{"errcode":"M_FORBIDDEN"}`, http.StatusForbidden)
			return
		}
		var body struct {
			Events []struct {
				EventID string `json:"event_id"`
			} `json:"events"`
		}
		raw, err := io.ReadAll(r.Body)
		if err == nil {
			err = json.Unmarshal(raw, &body)
		}
		if err != nil {
			http.Error(w, `{"errcode":"M_NOT_JSON"}`, http.StatusBadRequest)
			return
		}
		if f := deliver.Load(); f != nil {
			atomic.AddInt64(txns, 1)
			for _, e := range body.Events {
				(*f)(e.EventID, now)
			}
		}
		_, _ = w.Write([]byte(`{}`))
	})
}

func printAppService(out io.Writer, r *serviceRun) {
	if r == nil {
		fmt.Fprintln(out, "(i) send→application service: skipped, no application service with a url in the configuration (deployments/bench-appservice.yaml registers one)")
		return
	}
	p99 := percentile(r.lat, 0.99)
	verdict := "met"
	if p99 > targetServiceP99 || r.missing > 0 {
		verdict = "short"
	}
	fmt.Fprintf(out, "(i) send→application service %s: %d sends at %.0f/s achieved, in %d transactions; from the send's 200 to the event in a transaction: p50 %s, p99 %s, max %s (target p99 ≤ %s: %s)\n",
		r.service, r.ops, r.sendRate, r.txns, fmtDur(percentile(r.lat, 0.5)), fmtDur(p99), fmtDur(percentile(r.lat, 1)), targetServiceP99, verdict)
	fmt.Fprintf(out, "    %d events arrived before their 200 (counted as 0), %d never arrived; CPU/send %s\n", r.beforeSend, r.missing, fmtDur(r.cpuPerOp()))
}
