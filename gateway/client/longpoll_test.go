package client

import (
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/gateway/serve"
)

// A /sync long poll waits longer than an ordinary request may take to write its answer,
// and still answers.
func TestSyncLongPollOutlivesWriteTimeout(t *testing.T) {
	t.Parallel()
	log := zaptest.NewLogger(t)
	limits := serve.Limits{ReadHeaderTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: 200 * time.Millisecond, IdleTimeout: time.Second}
	db := openAccountsDB(t)
	srv := &Server{ServerName: testServerName, DB: db, Feed: newStepFeed(0), HTTP: limits, Log: log}
	ln, err := serve.Listen("127.0.0.1:0", 0, log)
	if err != nil {
		t.Fatal(err)
	}
	hs := serve.New(srv.Handler(), limits, log)
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })

	c := &syncClient{t: t, url: "http://" + ln.Addr().String(), token: newSyncTestUser(t, db, "@poll:"+testServerName, "POLLDEV")}
	// Nothing happens: the poll waits its full second, five write timeouts.
	if b := c.sync("since", "s0", "timeout", "1000"); b.NextBatch != "s0" {
		t.Fatalf("next_batch %s, want s0", b.NextBatch)
	}
}
