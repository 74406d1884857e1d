package client

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ganglionhq/ganglion/persist"
)

// Sync tokens are "s<seq>": everything in the EVENTS log up to and including message
// seq has been seen. The log sequence is the single global order (ARCHITECTURE.md).
func formatSyncToken(seq uint64) string { return "s" + strconv.FormatUint(seq, 10) }

func parseSyncToken(tok string) (uint64, error) {
	rest, ok := strings.CutPrefix(tok, "s")
	if !ok {
		return 0, fmt.Errorf("unknown token %q", tok)
	}
	// Other servers' tokens carry more fields after '_'; ours never do, but tolerating
	// them lets a client keep its token across a migration.
	rest, _, _ = strings.Cut(rest, "_")
	return strconv.ParseUint(rest, 10, 64)
}

// Pagination tokens are "t<seq>_<idx>": the boundary just before the event at that
// position. A sync token s<seq> is the boundary after all of message seq.
func formatPageToken(p persist.Pos) string {
	return "t" + strconv.FormatUint(p.Seq, 10) + "_" + strconv.Itoa(p.Idx)
}

func parsePageToken(tok string) (persist.Pos, error) {
	if strings.HasPrefix(tok, "s") {
		seq, err := parseSyncToken(tok)
		return persist.Pos{Seq: seq + 1}, err
	}
	rest, ok := strings.CutPrefix(tok, "t")
	if !ok {
		return persist.Pos{}, fmt.Errorf("unknown token %q", tok)
	}
	seqStr, idxStr, ok := strings.Cut(rest, "_")
	if !ok {
		return persist.Pos{}, fmt.Errorf("malformed token %q", tok)
	}
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if err != nil {
		return persist.Pos{}, fmt.Errorf("malformed token %q", tok)
	}
	idx, err := strconv.Atoi(idxStr)
	if err != nil || idx < 0 {
		return persist.Pos{}, fmt.Errorf("malformed token %q", tok)
	}
	return persist.Pos{Seq: seq, Idx: idx}, nil
}
