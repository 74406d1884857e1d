package serve

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// shortLimits are limits short enough for a test to watch them act.
var shortLimits = Limits{
	ReadHeaderTimeout: 300 * time.Millisecond,
	ReadTimeout:       500 * time.Millisecond,
	WriteTimeout:      500 * time.Millisecond,
	IdleTimeout:       500 * time.Millisecond,
	MaxConnsPerIP:     3,
}

// patience is how long a test waits for a limit that should act within a second.
const patience = 5 * time.Second

// startServer serves h with l on a loopback port and returns its address.
func startServer(t *testing.T, h http.Handler, l Limits) string {
	t.Helper()
	log := zaptest.NewLogger(t)
	ln, err := Listen("127.0.0.1:0", l.MaxConnsPerIP, log)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(h, l, log)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// echoBody answers with the length of the body it read.
var echoBody = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
		return
	}
	_, _ = io.WriteString(w, strings.Repeat("x", len(b)))
})

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitClosed reads from c until the server closes it, failing after patience.
func waitClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(patience))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the connection is still open after %s", patience)
	}
}

func TestShortBodyIsCutAtReadTimeout(t *testing.T) {
	t.Parallel()
	c := dial(t, startServer(t, echoBody, shortLimits))
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n"+strings.Repeat("a", 32))
	waitClosed(t, c)
}

func TestSlowBodyIsCut(t *testing.T) {
	t.Parallel()
	c := dial(t, startServer(t, echoBody, shortLimits))
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			if _, err := c.Write([]byte("a")); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	waitClosed(t, c)
	_ = c.Close()
	<-done
}

func TestIdleConnectionIsClosed(t *testing.T) {
	t.Parallel()
	c := dial(t, startServer(t, echoBody, shortLimits))
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("status %d, close %v: want a kept-alive 200", resp.StatusCode, resp.Close)
	}
	waitClosed(t, c)
}

func TestPerIPCapRefusesExtraConnection(t *testing.T) {
	t.Parallel()
	addr := startServer(t, echoBody, shortLimits)
	held := make([]net.Conn, shortLimits.MaxConnsPerIP)
	for i := range held {
		held[i] = dial(t, addr)
	}
	// The server has accepted them once each answers a request.
	get := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(patience))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}
	for _, c := range held {
		if err := get(c); err != nil {
			t.Fatal(err)
		}
	}
	extra := dial(t, addr)
	if err := get(extra); err == nil {
		t.Fatal("a connection over the per-IP cap was served")
	}
	// A slot given back is usable again.
	_ = held[0].Close()
	deadline := time.Now().Add(patience)
	for {
		if err := get(dial(t, addr)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection's slot was not given back")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A long poll answering after the ordinary write timeout still gets its answer out (and
// keeps its context past the read timeout).
func TestLongPollOutlivesWriteTimeout(t *testing.T) {
	t.Parallel()
	wait := 3 * shortLimits.WriteTimeout
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(wait):
			_, _ = io.WriteString(w, "done")
		case <-r.Context().Done():
		}
	})
	mux := http.NewServeMux()
	mux.Handle("/poll", LongPoll(slow, shortLimits))
	mux.Handle("/plain", slow)
	addr := startServer(t, mux, shortLimits)

	resp, err := http.Get("http://" + addr + "/poll")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || string(body) != "done" {
		t.Fatalf("long poll: %q, %v", body, err)
	}
	// Without LongPoll the write timeout applies.
	if resp, err := http.Get("http://" + addr + "/plain"); err == nil {
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err == nil && string(body) == "done" {
			t.Fatal("a plain request outlived the write timeout")
		}
	}
}
