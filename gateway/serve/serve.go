// Package serve builds the HTTP servers of every listener (client API listeners and the
// front door) with the same limits: how long a client may take to send a request, how
// long a response may take to write, how long an idle kept-alive connection stays open,
// and how many connections one client IP may hold.
package serve

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Limits bound what one connection and one client IP may hold of a server.
type Limits struct {
	// ReadHeaderTimeout bounds the reading of a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the reading of a whole request, headers and body: a client
	// announcing more body than it sends, or sending it byte by byte, is cut off.
	ReadTimeout time.Duration
	// WriteTimeout bounds a response, from the end of the request's headers; it must
	// exceed the longest wait of an ordinary request (an intent's answer, 30 s). Long
	// polls extend it for themselves (LongPoll).
	WriteTimeout time.Duration
	// IdleTimeout closes a kept-alive connection that has no request for this long.
	IdleTimeout time.Duration
	// MaxConnsPerIP caps the open connections of one client IP; 0 means no cap.
	MaxConnsPerIP int
}

// DefaultLimits are the limits of a listener the configuration does not change.
var DefaultLimits = Limits{
	ReadHeaderTimeout: 10 * time.Second,
	ReadTimeout:       30 * time.Second,
	WriteTimeout:      45 * time.Second,
	IdleTimeout:       60 * time.Second,
	MaxConnsPerIP:     256,
}

// New returns a server of h with the limits l. (net/http lifts the read deadline once a
// request's body has been read, so a handler may wait longer than ReadTimeout.)
func New(h http.Handler, l Limits, log *zap.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
}

// Listen listens on addr; with a positive maxPerIP, a connection from an IP already
// holding maxPerIP connections is closed as soon as it is accepted.
func Listen(addr string, maxPerIP int, log *zap.Logger) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil || maxPerIP <= 0 {
		return ln, err
	}
	return &perIPListener{Listener: ln, max: maxPerIP, open: map[string]int{}, log: log}, nil
}

// MaxLongPoll caps the wait of a long poll (/sync's timeout); clients ask for 30 s.
const MaxLongPoll = 60 * time.Second

// LongPoll lets the requests of h (long polls, which wait up to MaxLongPoll before they
// answer) write their response for MaxLongPoll longer than l.WriteTimeout.
func LongPoll(h http.Handler, l Limits) http.Handler {
	if l.WriteTimeout <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(MaxLongPoll + l.WriteTimeout))
		h.ServeHTTP(w, r)
	})
}

// perIPListener counts the open connections of each remote IP.
type perIPListener struct {
	net.Listener
	max int
	log *zap.Logger

	mu   sync.Mutex
	open map[string]int
}

func (l *perIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		l.mu.Lock()
		full := l.open[ip] >= l.max
		if !full {
			l.open[ip]++
		}
		l.mu.Unlock()
		if full {
			l.log.Debug("connection refused: too many from this IP", zap.String("ip", ip), zap.Int("max", l.max))
			_ = c.Close()
			continue
		}
		return &countedConn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

func (l *perIPListener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[ip]--; l.open[ip] <= 0 {
		delete(l.open, ip)
	}
}

func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return c.RemoteAddr().String()
}

// countedConn gives its slot back once, when closed.
type countedConn struct {
	net.Conn
	release func()
	once    sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// ForwardedFor serves h with each request's RemoteAddr set to the client address the
// reverse proxy in front added last to X-Forwarded-For (for a listener with Synapse's
// x_forwarded: true, reached only through that proxy).
func ForwardedFor(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.Header.Values("X-Forwarded-For"); len(v) > 0 {
			list := strings.Split(v[len(v)-1], ",")
			if ip := net.ParseIP(strings.TrimSpace(list[len(list)-1])); ip != nil {
				r.RemoteAddr = net.JoinHostPort(ip.String(), "0")
			}
		}
		h.ServeHTTP(w, r)
	})
}

// ClientIP is the IP address of r's client.
func ClientIP(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}
