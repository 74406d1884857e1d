package client

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// FuzzDecodePresence checks that any PUT /presence body either gets a Matrix client
// error or a state the presence writer accepts.
func FuzzDecodePresence(f *testing.F) {
	for _, s := range []string{
		`{"presence":"online"}`, `{"presence":"unavailable","status_msg":"lunch"}`, `{"presence":"offline","status_msg":""}`,
		`{"presence":"busy"}`, `{"presence":5}`, `{"status_msg":"x"}`, `{"presence":"online","status_msg":null}`,
		`{"presence":"online","last_active_ago":5}`, `[]`, `{`, `{"presence":"online","status_msg":"` + strings.Repeat("é", 3000) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPut, "/_matrix/client/v3/presence/@a:h/status", strings.NewReader(string(body)))
		set, err := decodePresence(r)
		if err != nil {
			checkDecodeError(t, body, err)
			return
		}
		if !schemas.ValidPresence(set.Presence) || set.StatusMsg != nil && len(*set.StatusMsg) > userstreams.MaxStatusMsg {
			t.Fatalf("body %q gave %+v", body, set)
		}
		if refused := set.Validate(); refused != nil {
			t.Fatalf("body %q gave a state the writer refuses: %+v", body, refused)
		}
	})
}
