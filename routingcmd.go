package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/ganglionhq/ganglion/deployments/config"
	"github.com/ganglionhq/ganglion/gateway/frontdoor"
)

// checkRoutingCmd reads every process's request counts from its metrics listener and
// checks that each endpoint a process served is one the seed's routing (the front
// door's, or generate-nginx's) sends to it: after a run of clients through either,
// every request reached the role the seed assigns.
func checkRoutingCmd(args []string) error {
	fs := flag.NewFlagSet("check-routing", flag.ContinueOnError)
	procs, table, err := deploymentRoutes(fs, args, newLogger(zapcore.WarnLevel))
	if err != nil {
		return err
	}
	complete, err := table.Complete()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var served []servedCount
	for _, p := range procs {
		counts, err := scrapeRequests(ctx, p)
		if err != nil {
			return err
		}
		served = append(served, counts...)
	}
	return reportRouting(os.Stdout, served, complete)
}

// servedCount is how many requests of one endpoint one process served.
type servedCount struct {
	instance, method, servlet string
	n                         float64
}

// requestsLine is a line of synapse_http_server_requests_received_total.
var requestsLine = regexp.MustCompile(`^synapse_http_server_requests_received_total\{method="([A-Z]+)",servlet="([^"]+)"\} ([0-9.e+]+)$`)

// scrapeRequests reads the request counts of a process from its first metrics
// listener.
func scrapeRequests(ctx context.Context, p *config.Config) ([]servedCount, error) {
	listeners := p.MetricsListeners()
	if len(listeners) == 0 {
		return nil, fmt.Errorf("%s has no metrics listener (enable_metrics and a listener of type metrics): its requests cannot be counted", p.InstanceName())
	}
	host := "127.0.0.1"
	if b := listeners[0].BindAddresses; len(b) > 0 && b[0] != "0.0.0.0" && b[0] != "::" {
		host = b[0]
	}
	url := "http://" + net.JoinHostPort(host, strconv.Itoa(listeners[0].Port)) + "/_synapse/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.InstanceName(), err)
	}
	defer resp.Body.Close()
	return parseRequests(p.InstanceName(), resp.Body)
}

// parseRequests takes the non-zero request counts out of a metrics page.
func parseRequests(instance string, r io.Reader) ([]servedCount, error) {
	var out []servedCount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		m := requestsLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		n, err := strconv.ParseFloat(m[3], 64)
		if err != nil || n == 0 {
			continue
		}
		out = append(out, servedCount{instance: instance, method: m[1], servlet: m[2], n: n})
	}
	return out, sc.Err()
}

// servletPlaceholder is a {name} or {name...} of a servlet's pattern.
var servletPlaceholder = regexp.MustCompile(`\{([a-zA-Z]+)(\.\.\.)?\}`)

// samplePath turns a servlet's pattern into a path that matches it, for the routing
// rules to classify: a version for *, and a plausible value of each placeholder.
func samplePath(servlet string) string {
	path := strings.Replace(servlet, "*", "v3", 1)
	return servletPlaceholder.ReplaceAllStringFunc(path, func(p string) string {
		switch name := strings.ToLower(strings.Trim(p, "{}.")); {
		case strings.Contains(name, "room"):
			return "!room:example.org"
		case strings.Contains(name, "user"):
			return "@user:example.org"
		case strings.Contains(name, "alias"):
			return "#alias:example.org"
		case strings.Contains(name, "event"):
			return "$event"
		default:
			return "x"
		}
	})
}

// allowedFor returns the upstreams the seed's routing may send a servlet's requests
// to: those of its group, with and without a since (an initial sync's group may
// differ from an incremental one's). refused is an internal endpoint, sent nowhere.
func allowedFor(method, servlet string, table frontdoor.Table) (group string, instances []string, refused bool) {
	path := samplePath(servlet)
	var groups []string
	for _, query := range []string{"", "?since=s1"} {
		req, err := http.NewRequest(method, path+query, nil)
		if err != nil {
			continue
		}
		route := frontdoor.Classify(req)
		if route.Refused {
			return "", nil, true
		}
		if !slices.Contains(groups, string(route.Group)) {
			groups = append(groups, string(route.Group))
		}
		for _, u := range table[route.Group] {
			name, _, _ := strings.Cut(u.Name, ":")
			if !slices.Contains(instances, name) {
				instances = append(instances, name)
			}
		}
	}
	return strings.Join(groups, "+"), instances, false
}

// reportRouting prints every endpoint served, by whom and where the seed routes it,
// and fails when a process served one the seed routes elsewhere. /health is every
// listener's, for the front door's checks, and /_synapse/replication/ the processes'
// own traffic on their replication listeners: neither is routed.
func reportRouting(out io.Writer, served []servedCount, table frontdoor.Table) error {
	served = slices.Clone(served)
	slices.SortFunc(served, func(a, b servedCount) int {
		return strings.Compare(a.servlet+" "+a.method+" "+a.instance, b.servlet+" "+b.method+" "+b.instance)
	})
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tMETHOD\tSERVED BY\tREQUESTS\tSEED'S GROUP\tROUTED TO\t")
	wrong := 0
	for _, s := range served {
		if s.servlet == "/health" || strings.HasPrefix(s.servlet, "/_synapse/replication/") {
			continue
		}
		group, allowed, refused := allowedFor(s.method, s.servlet, table)
		verdict := ""
		switch {
		case refused:
			group, verdict = "(internal)", "  NOT ROUTED: an internal endpoint"
			wrong++
		case !slices.Contains(allowed, s.instance):
			verdict = "  WRONG PROCESS"
			wrong++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f\t%s\t%s%s\t\n", s.servlet, s.method, s.instance, s.n, group, strings.Join(allowed, ","), verdict)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if wrong > 0 {
		return fmt.Errorf("%d endpoints were served by a process the seed's routing does not send them to", wrong)
	}
	fmt.Fprintf(out, "every one of the %d endpoints served was served where the seed routes it\n", len(served))
	return nil
}
