package frontdoor

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ganglionhq/ganglion/gateway/serve"
)

// NginxOptions are what the nginx configuration needs beyond the table.
type NginxOptions struct {
	// Listen is the address nginx serves the deployment on, as a listen directive
	// takes it ("127.0.0.1:8008").
	Listen string
	// MaxBodySize is the largest request body (the media repository's upload limit).
	MaxBodySize int64
	// Source names the files the table came from, for the header comment.
	Source string
}

// nginxUpstream names a group's upstream block.
func nginxUpstream(g Group) string { return "ganglion_" + string(g) }

// WriteNginx writes an nginx configuration equivalent to a Router of table: an http
// block's worth of maps, upstream blocks and one server, to include from nginx.conf. It
// routes with Rules in their order (nginx tries regular expression locations in the
// order they appear), hashes users, rooms and origins consistently as the Router does
// (with nginx's own hash, so the two may place a key differently), takes an upstream out
// for 2 s after a failed connection, and retries only idempotent requests elsewhere
// (nginx's proxy_next_upstream default).
func WriteNginx(out io.Writer, table Table, o NginxOptions) error {
	table, err := table.Complete()
	if err != nil {
		return err
	}
	w := bufio.NewWriter(out)
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(w, format+"\n", args...) }
	p("# Written by `ganglion generate-nginx` from %s.", o.Source)
	p("# Include it in the http block of nginx.conf. It routes as `ganglion frontdoor` does")
	p("# with the same files; regenerate it when they change.")
	p("")
	p("# /sync with a since token is an incremental sync; without, an initial one.")
	p("map $arg_since $ganglion_sync_group {")
	p("    default %s;", nginxUpstream(Sync))
	p("    ''      %s;", nginxUpstream(InitialSync))
	p("}")
	p("# The user's localpart, from the access token in the query or the header.")
	p("map $arg_access_token $ganglion_user_from_query {")
	p("    default             $arg_access_token;")
	p(`    "~^syt_(?<ganglion_q>[^_]*)_"  $ganglion_q;`)
	p("}")
	p("map $http_authorization $ganglion_user {")
	p("    default             $http_authorization;")
	p(`    "~^Bearer syt_(?<ganglion_h>[^_]*)_"  $ganglion_h;`)
	p(`    ""                  $ganglion_user_from_query;`)
	p("}")
	p("# The origin server of a federation request, from its X-Matrix authorization.")
	p("map $http_authorization $ganglion_origin {")
	p(`    default             "";`)
	p(`    "~*^X-Matrix .*origin=\"?(?<ganglion_o>[^\",]+)"  $ganglion_o;`)
	p("}")
	p("# The room of a pagination request.")
	p("map $uri $ganglion_room {")
	p(`    default             "";`)
	p(`    "~%s"  $ganglion_r;`, strings.Replace(roomMessagesPattern.String(), "([^/]+)", "(?<ganglion_r>[^/]+)", 1))
	p("}")
	p("")
	keys := map[Group]Key{}
	for _, r := range Rules {
		keys[r.Group] = r.Key
	}
	for _, g := range Groups {
		if len(table[g]) == 0 {
			continue
		}
		p("upstream %s {", nginxUpstream(g))
		switch keys[g] {
		case ByUser:
			p("    hash $ganglion_user consistent;")
		case ByRoom:
			p("    hash $ganglion_room consistent;")
		case ByOrigin:
			p("    hash $ganglion_origin consistent;")
		}
		for _, u := range table[g] {
			p("    server %s max_fails=1 fail_timeout=2s;  # %s", u.URL.Host, u.Name)
		}
		p("    keepalive 16;")
		p("}")
	}
	p("")
	p("server {")
	p("    listen %s;", o.Listen)
	if o.MaxBodySize > 0 {
		p("    client_max_body_size %d;", o.MaxBodySize)
	}
	p("    proxy_http_version 1.1;")
	p(`    proxy_set_header Connection "";`)
	p("    proxy_set_header Host $host;")
	p("    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
	p("    proxy_set_header X-Forwarded-Proto $scheme;")
	p("    # Long polls (/sync, /events) wait up to %s before answering.", serve.MaxLongPoll)
	p("    proxy_read_timeout %ds;", int((serve.MaxLongPoll+30*time.Second)/time.Second))
	p("    proxy_buffering off;")
	p("")
	p("    # Internal endpoints are never forwarded.")
	p(`    location ~ "%s" {`, refusedPattern.String())
	p("        default_type application/json;")
	p(`        return 404 '{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}';`)
	p("    }")
	for _, r := range Rules {
		p(`    location ~ "%s" {`, r.Pattern.String())
		switch {
		case r.Pattern.String() == syncPattern.String():
			p("        proxy_pass http://$ganglion_sync_group;")
		case len(table[r.Group]) == 0:
			p("        default_type application/json;")
			p(`        return 404 '{"errcode":"M_UNRECOGNIZED","error":"no process of this deployment serves this request"}';`)
		default:
			p("        proxy_pass http://%s;", nginxUpstream(r.Group))
		}
		p("    }")
	}
	p("    location / {")
	p("        proxy_pass http://%s;", nginxUpstream(Client))
	p("    }")
	p("}")
	return w.Flush()
}
