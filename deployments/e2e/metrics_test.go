package e2e

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
)

// With enable_metrics, a listener of type metrics serves Prometheus metrics at
// /_synapse/metrics: the client API's requests by route, as Synapse names them, the
// event writer's appends and projections, and Go's runtime.
func TestMetrics(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{})
	d.shared["enable_metrics"] = true
	metricsPort := freePort(t)
	hs := d.startMainWith([]map[string]any{{"port": metricsPort, "bind_addresses": []string{"127.0.0.1"}, "type": "metrics"}})
	alice := newUser(ctx, t, hs.url(), "alice")
	room := createRoomWith(ctx, t, alice, "private_chat")
	for i := range 3 {
		if _, err := sendText(ctx, alice, room, "m"+strconv.Itoa(i), "measured"); err != nil {
			t.Fatal(err)
		}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(metricsPort)+"/_synapse/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	count := func(pattern string) float64 {
		m := regexp.MustCompile(`(?m)^` + pattern + ` ([0-9.e+]+)$`).FindStringSubmatch(text)
		if m == nil {
			return -1
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	for _, c := range []struct {
		pattern string
		min     float64
	}{
		{`synapse_http_server_requests_received_total\{method="PUT",servlet="/_matrix/client/\*/rooms/\{room\}/send/\{type\}/\{txn\}"\}`, 3},
		{`synapse_http_server_response_time_seconds_count\{code="200",method="PUT",servlet="/_matrix/client/\*/rooms/\{room\}/send/\{type\}/\{txn\}"\}`, 3},
		{`ganglion_persister_appended_events_total`, 3 + 5}, // the messages and the room's initial events
		{`ganglion_persister_project_seconds_count`, 1},
		{`go_goroutines`, 1},
	} {
		if got := count(c.pattern); got < c.min {
			t.Errorf("%s = %v, want at least %v", c.pattern, got, c.min)
		}
	}
	// The client listener does not serve them.
	if status, _, _ := rawRequest(ctx, t, http.MethodGet, hs.url()+"/_synapse/metrics", "", nil); status != http.StatusNotFound {
		t.Errorf("metrics on the client listener: %d", status)
	}
}
