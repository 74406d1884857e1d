package frontdoor

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"
)

// BenchmarkOverhead measures what the front door adds to a request: each iteration
// sends one GET straight to an upstream and one through the Router to it, over kept-alive
// connections, and the benchmark reports the p50 and p99 of both and of the difference
// (added-p50-ms, the target being ≤ 0.2 ms).
func BenchmarkOverhead(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"versions":["v1.11"]}`)
	}))
	defer backend.Close()
	u, _ := url.Parse(backend.URL)
	rt, err := New(Table{Client: []Upstream{{Name: "gw", URL: u}}}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	front := httptest.NewServer(rt)
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	get := func(base string) time.Duration {
		start := time.Now()
		resp, err := client.Get(base + "/_matrix/client/versions")
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return time.Since(start)
	}
	get(backend.URL)
	get(front.URL)
	direct := make([]time.Duration, 0, b.N)
	proxied := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		direct = append(direct, get(backend.URL))
		proxied = append(proxied, get(front.URL))
	}
	b.StopTimer()
	pct := func(d []time.Duration, p float64) float64 {
		slices.Sort(d)
		return float64(d[int(float64(len(d)-1)*p)]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(direct, 0.5), "direct-p50-ms")
	b.ReportMetric(pct(proxied, 0.5), "proxied-p50-ms")
	b.ReportMetric(pct(direct, 0.99), "direct-p99-ms")
	b.ReportMetric(pct(proxied, 0.99), "proxied-p99-ms")
	b.ReportMetric(pct(proxied, 0.5)-pct(direct, 0.5), "added-p50-ms")
	b.ReportMetric(pct(proxied, 0.99)-pct(direct, 0.99), "added-p99-ms")
}
