package load

import (
	"context"
	"crypto/ed25519"
	"net"
	"os"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		ds = append(ds, ms(i))
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, ms(50)}, {0.99, ms(99)}, {1, ms(100)}, {0.001, ms(1)}} {
		if got := percentile(ds, c.q); got != c.want {
			t.Errorf("percentile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if ds[0] != ms(100) {
		t.Error("percentile sorted its input")
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of nothing = %v", got)
	}
}

func TestParseCPU(t *testing.T) {
	stat := []byte("cpu  100 5 50 1000 20 3 2 1 7 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nintr 1\n")
	s := parseCPU(stat)
	// busy: user+nice+system+irq+softirq+steal; idle and iowait are not; guest is in user.
	if !s.ok || s.busy != 100+5+50+3+2+1 || s.total != 100+5+50+1000+20+3+2+1 {
		t.Fatalf("parseCPU = %+v", s)
	}
	if s := parseCPU([]byte("intr 1\n")); s.ok {
		t.Fatal("parseCPU accepted a file without a cpu line")
	}
}

func TestListenerPID(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := os.ReadDir("/proc/self/fd"); err != nil {
		t.Skip("no /proc here")
	}
	if got := listenerPID(ln.Addr().(*net.TCPAddr).Port); got != os.Getpid() {
		t.Fatalf("listenerPID = %d, want this process, %d", got, os.Getpid())
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, h := range []string{"127.0.0.1", "::1", "127.8.9.10", "localhost"} {
		if err := checkLoopbackHost(h); err != nil {
			t.Errorf("%s refused: %v", h, err)
		}
	}
	for _, h := range []string{"10.0.0.1", "192.168.1.1", "8.8.8.8", ""} {
		if err := checkLoopbackHost(h); err == nil {
			t.Errorf("%s accepted", h)
		}
	}
	if err := checkLoopbackURLs("nats://127.0.0.1:4222, nats://10.1.2.3:4222"); err == nil {
		t.Error("a NATS list with a remote server was accepted")
	}
}

// The benchmarks time, in process, the parts `ganglion load` measures as ceilings.

func BenchmarkEventBuild(b *testing.B) {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	sb := newSampleBuilder(key)
	now := time.Now()
	for b.Loop() {
		pdu, err := sb.build(now)
		if err != nil {
			b.Fatal(err)
		}
		_ = pdu.EventID()
	}
}

func openBenchStream(b *testing.B) (*jsTarget, []byte) {
	b.Helper()
	event, err := sampleEvent()
	if err != nil {
		b.Fatal(err)
	}
	js, err := openJetStream(context.Background(), "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(js.close)
	return js, event
}

func BenchmarkRawPublish(b *testing.B) {
	js, event := openBenchStream(b)
	b.SetBytes(int64(len(event)))
	ctx := context.Background()
	for b.Loop() {
		if _, err := js.js.Publish(ctx, js.subject+".1", event); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawPublishAsync(b *testing.B) {
	js, event := openBenchStream(b)
	b.SetBytes(int64(len(event)))
	for b.Loop() {
		if _, err := js.js.PublishAsync(js.subject+".1", event); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("acks missing after a minute")
	}
}
