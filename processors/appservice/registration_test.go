package appservice

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mautrix "maunium.net/go/mautrix/appservice"
)

func writeRegistration(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const bridge = `id: bridge
url: http://127.0.0.1:9000
as_token: as1
hs_token: hs1
sender_localpart: bridgebot
namespaces:
  users:
    - regex: '@bridge_.*:example\.org'
      exclusive: true
  aliases:
    - regex: '#bridge_.*'
      exclusive: true
  rooms:
    - regex: '!shared:example\.org'
      exclusive: false
`

func TestLoadMatchesNamespaces(t *testing.T) {
	dir := t.TempDir()
	s, errs := Load([]string{writeRegistration(t, dir, "b.yaml", bridge)}, "example.org")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	svc, ok := s.ByToken("as1")
	if !ok || svc.ID != "bridge" || svc.SenderID != "@bridgebot:example.org" {
		t.Fatalf("ByToken: %+v %v", svc, ok)
	}
	for _, c := range []struct {
		got, want bool
		what      string
	}{
		{svc.OwnsUser("@bridge_alice:example.org"), true, "a namespaced user"},
		{svc.OwnsUser("@bridgebot:example.org"), true, "the sender"},
		{svc.OwnsUser("@alice:example.org"), false, "another user"},
		{svc.OwnsUser("@x:y@bridge_a:example.org"), false, "a namespace found later in the string"},
		{svc.OwnsAlias("#bridge_x:example.org"), true, "a namespaced alias"},
		{svc.OwnsRoom("!shared:example.org"), true, "a namespaced room"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	if _, ok := s.ExclusiveUser("@bridge_bob:example.org"); !ok {
		t.Error("an exclusive user namespace is not exclusive")
	}
	if _, ok := s.ExclusiveAlias("#other:example.org"); ok {
		t.Error("an alias outside every namespace is exclusive")
	}
}

func TestLoadRefusesBadRegistrations(t *testing.T) {
	dir := t.TempDir()
	good := writeRegistration(t, dir, "good.yaml", bridge)
	for _, tt := range []struct {
		name, body, key, reason string
	}{
		{"missing", "id: x\nurl: null\nsender_localpart: x\nhs_token: h2\n", "as_token", "required"},
		{"dupid", strings.Replace(strings.Replace(bridge, "as_token: as1", "as_token: as9", 1), "hs_token: hs1", "hs_token: hs9", 1), "id", "also the id"},
		{"duptoken", strings.Replace(strings.Replace(bridge, "id: bridge", "id: b2", 1), "hs_token: hs1", "hs_token: hs9", 1), "as_token", "same as_token"},
		{"regex", "id: r\nurl: null\nas_token: a3\nhs_token: h3\nsender_localpart: r\nnamespaces:\n  users:\n    - regex: '@r_(.*'\n      exclusive: true\n", "namespaces.users[0].regex", "invalid regex"},
		{"overlap", "id: o\nurl: null\nas_token: a4\nhs_token: h4\nsender_localpart: o\nnamespaces:\n  users:\n    - regex: '@bridge_.*'\n      exclusive: true\n", "namespaces.users", "overlaps"},
		{"scheme", "id: s\nurl: ftp://x\nas_token: a5\nhs_token: h5\nsender_localpart: s\n", "url", "http(s) URL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := writeRegistration(t, dir, tt.name+".yaml", tt.body)
			_, errs := Load([]string{good, p}, "example.org")
			if len(errs) == 0 {
				t.Fatal("accepted")
			}
			var ce *ConfigError
			if !errors.As(errs[0], &ce) || ce.File != p || ce.Key != tt.key || !strings.Contains(ce.Reason, tt.reason) {
				t.Fatalf("error %v, want %s: %s: ...%s...", errs[0], p, tt.key, tt.reason)
			}
		})
	}
}

// TestOverlapByExample: nested and equal exclusive namespaces overlap, disjoint ones and
// non-exclusive ones do not.
func TestOverlapByExample(t *testing.T) {
	ns := func(re string, exclusive bool) []namespace {
		l, errs := compile("f", "k", mautrix.NamespaceList{{Regex: re, Exclusive: exclusive}})
		if errs != nil {
			t.Fatal(errs)
		}
		return l
	}
	for _, c := range []struct {
		a, b string
		ex   bool
		want bool
	}{
		{`@irc_.*:example\.org`, `@irc_.*`, true, true},
		{`@irc_.*`, `@irc_.*`, true, true},
		{`@(irc|slack)_.*`, `@slack_.*`, true, true},
		{`@irc_.*`, `@slack_.*`, true, false},
		{`@irc_[a-z]+`, `@irc_x`, true, true},
		{`@irc_.*`, `@irc_.*`, false, false},
	} {
		if _, _, got := overlap(ns(c.a, c.ex), ns(c.b, true)); got != c.want {
			t.Errorf("overlap(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
