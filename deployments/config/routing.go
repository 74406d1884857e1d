package config

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/ganglionhq/ganglion/gateway/frontdoor"
)

// routes reads a listener's routes: the front door's groups it takes.
func (l *loader) routes(n *yaml.Node, path string) []frontdoor.Group {
	out := []frontdoor.Group{}
	l.list(n, path, func(v *yaml.Node, p string) {
		s, ok := l.str(v, p)
		switch {
		case !ok:
		case !frontdoor.KnownGroup(s):
			names := make([]string, len(frontdoor.Groups))
			for i, g := range frontdoor.Groups {
				names[i] = string(g)
			}
			l.fail(p, "unknown route %q (known: %s)", s, strings.Join(names, ", "))
		default:
			out = append(out, frontdoor.Group(s))
		}
	})
	return out
}

// routeResource is the resource a listener needs to take a group's requests.
func routeResource(g frontdoor.Group) string {
	switch g {
	case frontdoor.Federation, frontdoor.FederationInbound:
		return "federation"
	case frontdoor.Media:
		return "media"
	}
	return "client"
}

// servesRoute reports whether ln of c can take g's requests: the media group needs the
// media resource, or a client listener of a process serving media.
func (c *Config) servesRoute(ln Listener, g frontdoor.Group) bool {
	if g == frontdoor.Media && ln.Has("client") && c.ServesMedia() {
		return true
	}
	return ln.Has(routeResource(g))
}

// streamRoutes pairs the stream writers' groups with their streams.
func (c *Config) streamRoutes() map[frontdoor.Group][]string {
	w := c.StreamWriters
	return map[frontdoor.Group][]string{
		frontdoor.Typing: w.Typing, frontdoor.ToDevice: w.ToDevice, frontdoor.AccountData: w.AccountData,
		frontdoor.Receipts: w.Receipts, frontdoor.Presence: w.Presence, frontdoor.PushRules: w.PushRules,
	}
}

// defaultRoutes are the groups of a listener without routes: client for the client
// resource, with the endpoints of the streams this process writes when stream_writers
// names it (a stream left to the main process is served by every client listener, as
// the seed's generic-worker table allows) and media when the process serves media;
// federation for the federation resource; media for the media resource.
func (c *Config) defaultRoutes(ln Listener) []frontdoor.Group {
	var out []frontdoor.Group
	if ln.Has("client") {
		out = append(out, frontdoor.Client)
		for _, g := range frontdoor.Groups {
			writers, ok := c.streamRoutes()[g]
			if ok && !slices.Equal(writers, []string{MainInstance}) && slices.Contains(writers, c.InstanceName()) {
				out = append(out, g)
			}
		}
	}
	if ln.Has("federation") {
		out = append(out, frontdoor.Federation)
	}
	if c.servesRoute(ln, frontdoor.Media) {
		out = append(out, frontdoor.Media)
	}
	return out
}

// upstreamHost is where a front door reaches ln: its first bind address, or, for a
// listener on every interface, the instance's host in instance_map (127.0.0.1 when it
// has none).
func (c *Config) upstreamHost(ln Listener) string {
	if len(ln.BindAddresses) > 0 {
		if ip := net.ParseIP(ln.BindAddresses[0]); ip != nil && !ip.IsUnspecified() {
			return ln.BindAddresses[0]
		}
	}
	if loc, ok := c.InstanceMap[c.InstanceName()]; ok && loc.Host != "" {
		return loc.Host
	}
	return "127.0.0.1"
}

// Routes returns the front door's table for a deployment's processes: which listener
// takes each group, from their routes (or their resources' defaults). Groups no listener
// takes are left to their fallbacks (frontdoor.Table.Complete).
func Routes(procs []*Config) (frontdoor.Table, error) {
	type entry struct {
		instance string
		url      *url.URL
		groups   []frontdoor.Group
	}
	var entries []entry
	perInstance := map[string]int{}
	for _, c := range procs {
		for _, ln := range c.HTTPListeners() {
			groups := ln.Routes
			if groups == nil {
				groups = c.defaultRoutes(ln)
			}
			if len(groups) == 0 {
				continue
			}
			host := net.JoinHostPort(c.upstreamHost(ln), strconv.Itoa(ln.Port))
			entries = append(entries, entry{c.InstanceName(), &url.URL{Scheme: "http", Host: host}, groups})
			perInstance[c.InstanceName()]++
		}
	}
	table := frontdoor.Table{}
	for _, e := range entries {
		name := e.instance
		if perInstance[name] > 1 {
			name += ":" + e.url.Port()
		}
		for _, g := range e.groups {
			table[g] = append(table[g], frontdoor.Upstream{Name: name, URL: e.url})
		}
	}
	if _, err := table.Complete(); err != nil {
		return nil, fmt.Errorf("routing: %w", err)
	}
	return table, nil
}
