package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"testing"
)

// A SIGTERM shows in the log: "shutting down" naming the signal, then "stopped".
func TestShutdownIsLogged(t *testing.T) {
	_, _, hs := singleProcess(t)
	hs.stop()
	_, _, logPath := hs.current()
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var msgs []string
	var cause string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct {
			Msg   string `json:"msg"`
			Cause string `json:"cause"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		if line.Msg == "shutting down" || line.Msg == "stopped" {
			msgs = append(msgs, line.Msg)
		}
		if line.Msg == "shutting down" {
			cause = line.Cause
		}
	}
	if len(msgs) != 2 || msgs[0] != "shutting down" || msgs[1] != "stopped" || cause != "terminated signal received" {
		t.Fatalf("logged %v (cause %q), want shutting down (terminated signal received), then stopped", msgs, cause)
	}
}
