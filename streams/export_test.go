package streams

import "time"

// SetFetchWait changes how long ReadLog's fetches wait, until the returned function
// restores it.
func SetFetchWait(d time.Duration) (restore func()) {
	old := fetchWait
	fetchWait = d
	return func() { fetchWait = old }
}
