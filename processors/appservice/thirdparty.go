package appservice

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"sync"
)

// Third-party networks (the services' protocols): what clients ask through
// /thirdparty is asked of every service that lists the protocol, at once, and what
// the services answer is put together as Synapse does. A service that fails or answers
// malformed is left out.

// Protocols returns the metadata of each protocol the services list (only protocol's,
// when it is not ""), the instances of the services listing one protocol put together,
// the other fields from the first that answered. Each instance with a network_id gets
// an instance_id, "<service id>|<network_id>".
func (s *Services) Protocols(ctx context.Context, client *http.Client, only string) map[string]map[string]any {
	type answer struct {
		protocol string
		info     map[string]any
	}
	var asks []func() answer
	for _, svc := range s.All() {
		for _, p := range svc.Protocols {
			if only != "" && p != only {
				continue
			}
			asks = append(asks, func() answer { return answer{p, protocolOf(ctx, client, svc, p)} })
		}
	}
	out := map[string]map[string]any{}
	for _, a := range askAll(asks) {
		if a.info == nil {
			continue
		}
		prev, ok := out[a.protocol]
		if !ok {
			out[a.protocol] = a.info
			continue
		}
		prev["instances"] = append(prev["instances"].([]any), a.info["instances"].([]any)...)
	}
	return out
}

func protocolOf(ctx context.Context, client *http.Client, svc *Service, protocol string) map[string]any {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	raw, err := call(ctx, client, svc, http.MethodGet, "/_matrix/app/v1/thirdparty/protocol/"+url.PathEscape(protocol), nil)
	var info map[string]any
	if err != nil || json.Unmarshal(raw, &info) != nil {
		return nil
	}
	instances, ok := info["instances"].([]any)
	if !ok {
		return nil
	}
	for _, inst := range instances {
		m, ok := inst.(map[string]any)
		if !ok {
			return nil
		}
		if network, ok := m["network_id"].(string); ok {
			m["instance_id"] = svc.ID + "|" + network
		}
	}
	return info
}

// Lookup asks the services for third-party users or locations (kind "user" or
// "location"): of protocol, with the protocol's fields, from the services listing it;
// or, with protocol "", those a Matrix user ID (userid) or alias (alias) stands for,
// from every service listing a protocol. Results without the protocol, the kind's
// field (userid, alias) or fields are left out.
func (s *Services) Lookup(ctx context.Context, client *http.Client, kind, protocol string, fields url.Values) []json.RawMessage {
	path := "/_matrix/app/v1/thirdparty/" + kind
	if protocol != "" {
		path += "/" + url.PathEscape(protocol)
	}
	if q := fields.Encode(); q != "" {
		path += "?" + q
	}
	field := map[string]string{"user": "userid", "location": "alias"}[kind]
	var asks []func() []json.RawMessage
	for _, svc := range s.All() {
		if len(svc.Protocols) == 0 || (protocol != "" && !slices.Contains(svc.Protocols, protocol)) {
			continue
		}
		asks = append(asks, func() []json.RawMessage { return lookupOf(ctx, client, svc, path, field) })
	}
	out := []json.RawMessage{}
	for _, list := range askAll(asks) {
		out = append(out, list...)
	}
	return out
}

func lookupOf(ctx context.Context, client *http.Client, svc *Service, path, field string) []json.RawMessage {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	raw, err := call(ctx, client, svc, http.MethodGet, path, nil)
	var list []json.RawMessage
	if err != nil || json.Unmarshal(raw, &list) != nil {
		return nil
	}
	var out []json.RawMessage
	for _, r := range list {
		var fields map[string]any
		if json.Unmarshal(r, &fields) != nil {
			continue
		}
		_, protocolOK := fields["protocol"].(string)
		_, fieldOK := fields[field].(string)
		_, fieldsOK := fields["fields"].(map[string]any)
		if protocolOK && fieldOK && fieldsOK {
			out = append(out, r)
		}
	}
	return out
}

// askAll runs the asks at once and returns their answers in their order.
func askAll[T any](asks []func() T) []T {
	out := make([]T, len(asks))
	var wg sync.WaitGroup
	for i, ask := range asks {
		wg.Go(func() { out[i] = ask() })
	}
	wg.Wait()
	return out
}
