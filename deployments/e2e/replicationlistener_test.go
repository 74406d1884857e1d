package e2e

import (
	"context"
	"net/http"
	"strconv"
	"testing"
)

// The replication resource: with worker_replication_secret, a request without the
// secret as a bearer token is 403; with it, 404, since processes replicate through
// NATS and no internal endpoint exists; and the client listener does not serve the
// replication paths.
func TestReplicationListener(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{})
	d.shared["worker_replication_secret"] = "internal-s3cret"
	port := freePort(t)
	hs := d.startMainWith([]map[string]any{{"port": port, "bind_addresses": []string{"127.0.0.1"}, "type": "http",
		"resources": []map[string]any{{"names": []string{"replication"}}}}})
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/_synapse/replication/send_event/x"
	for _, c := range []struct {
		what, token string
		status      int
		code        string
	}{
		{"no secret", "", http.StatusForbidden, "M_FORBIDDEN"},
		{"a wrong secret", "guess", http.StatusForbidden, "M_FORBIDDEN"},
		{"the secret", "internal-s3cret", http.StatusNotFound, "M_UNRECOGNIZED"},
	} {
		if status, code, _ := rawRequest(ctx, t, http.MethodPost, url, c.token, []byte(`{}`)); status != c.status || code != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.what, status, code, c.status, c.code)
		}
	}
	// Without the secret: a replication resource would refuse it (403); the client
	// listener has none, and does not know the path.
	if status, _, _ := rawRequest(ctx, t, http.MethodPost, hs.url()+"/_synapse/replication/send_event/x", "", []byte(`{}`)); status != http.StatusNotFound {
		t.Errorf("the replication path on the client listener: %d", status)
	}
}
