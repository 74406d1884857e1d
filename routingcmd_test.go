package main

import (
	"io"
	"net/url"
	"strings"
	"testing"

	"github.com/ganglionhq/ganglion/gateway/frontdoor"
)

// TestReportRouting: an endpoint served by a process the seed's routing does not send
// it to fails the check; the same counts served where the rules send them pass, and
// the front door's health checks and the replication traffic are not counted.
func TestReportRouting(t *testing.T) {
	up := func(name string) frontdoor.Upstream {
		return frontdoor.Upstream{Name: name, URL: &url.URL{Scheme: "http", Host: "127.0.0.1:1"}}
	}
	table, err := frontdoor.Table{
		frontdoor.Client: {up("main"), up("gateway1")},
		frontdoor.Sync:   {up("sync1")},
		frontdoor.Typing: {up("writer1")},
	}.Complete()
	if err != nil {
		t.Fatal(err)
	}
	page := `# HELP synapse_http_server_requests_received_total ...
synapse_http_server_requests_received_total{method="GET",servlet="/_matrix/client/*/sync"} 12
synapse_http_server_requests_received_total{method="PUT",servlet="/_matrix/client/*/rooms/{room}/typing/{user}"} 3
synapse_http_server_requests_received_total{method="PUT",servlet="/_matrix/client/*/rooms/{room}/send/{type}/{txn}"} 0
synapse_http_server_requests_received_total{method="GET",servlet="/health"} 40
`
	right := []struct{ instance, page string }{{"sync1", page}}
	var served []servedCount
	for _, r := range right {
		counts, err := parseRequests(r.instance, strings.NewReader(r.page))
		if err != nil {
			t.Fatal(err)
		}
		served = append(served, counts...)
	}
	// sync1 served sync as the rules say, but typing, which goes to writer1.
	if err := reportRouting(io.Discard, served, table); err == nil || !strings.Contains(err.Error(), "1 endpoints") {
		t.Fatalf("typing served by the sync worker: %v, want one endpoint reported", err)
	}
	typing, err := parseRequests("writer1", strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	good := []servedCount{served[0], typing[1]}
	if good[0].servlet != "/_matrix/client/*/sync" || good[1].instance != "writer1" || !strings.Contains(good[1].servlet, "typing") {
		t.Fatalf("parsed counts: %+v", good)
	}
	if err := reportRouting(io.Discard, append(good, servedCount{instance: "gateway1", method: "GET", servlet: "/health", n: 9},
		servedCount{instance: "writer1", method: "POST", servlet: "/_synapse/replication/send_event/{id}", n: 2}), table); err != nil {
		t.Fatalf("counts served where the rules send them: %v", err)
	}
}
