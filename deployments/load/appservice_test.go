package load

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestServiceHandler: the benchmark's service takes transactions with the hs_token only,
// hands every event over while a watch is set, and counts those transactions alone.
func TestServiceHandler(t *testing.T) {
	var txns int64
	var deliver atomic.Pointer[func(string, time.Time)]
	h := serviceHandler("secret", &txns, &deliver)
	put := func(token, body string) int {
		req := httptest.NewRequest(http.MethodPut, "/_matrix/app/v1/transactions/7", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	txn := `{"events":[{"event_id":"$a"},{"event_id":"$b"}]}`
	if code := put("secret", txn); code != 200 || txns != 0 {
		t.Fatalf("before a watch: %d, %d transactions counted", code, txns)
	}
	var got []string
	seen := func(id string, _ time.Time) { got = append(got, id) }
	deliver.Store(&seen)
	if code := put("wrong", txn); code != http.StatusForbidden {
		t.Errorf("a wrong hs_token: %d", code)
	}
	if code := put("secret", `{"events":`); code != http.StatusBadRequest {
		t.Errorf("a cut body: %d", code)
	}
	if code := put("secret", txn); code != 200 || txns != 1 || strings.Join(got, ",") != "$a,$b" {
		t.Errorf("a transaction: %d, %d counted, events %v", code, txns, got)
	}
}
