package client

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/schemas"
)

// A sync token holds one position per stream, in Synapse's order:
// s<events>_<presence>_<typing>_<receipts>_<account_data>_<push_rules>_<to_device>_<device_lists>.
// The events position is a sequence of the EVENTS log, the single global order
// (ARCHITECTURE.md); every other is a sequence of that stream's own log. A token with
// fewer fields (an older "s<seq>") reads the missing ones as 0: those streams start
// from the beginning, as an initial sync would.
type syncToken [syncSlots]uint64

// The fields of a sync token.
const (
	slotEvents = iota
	slotPresence
	slotTyping
	slotReceipts
	slotAccountData
	slotPushRules
	slotToDevice
	slotDeviceLists
	syncSlots
)

// streamSlots maps a per-user stream to its field of the sync token.
var streamSlots = map[string]int{
	schemas.StreamPresence: slotPresence, schemas.StreamTyping: slotTyping, schemas.StreamReceipts: slotReceipts,
	schemas.StreamAccountData: slotAccountData, schemas.StreamPushRules: slotPushRules,
	schemas.StreamToDevice: slotToDevice, schemas.StreamDeviceLists: slotDeviceLists,
}

// String leaves out trailing zero fields, so a server whose other streams are still
// empty writes the short "s<seq>".
func (t syncToken) String() string {
	n := syncSlots
	for n > 1 && t[n-1] == 0 {
		n--
	}
	b := make([]byte, 0, 8*n)
	b = append(b, 's')
	for i, p := range t[:n] {
		if i > 0 {
			b = append(b, '_')
		}
		b = strconv.AppendUint(b, p, 10)
	}
	return string(b)
}

func parseSyncToken(tok string) (syncToken, error) {
	var t syncToken
	rest, ok := strings.CutPrefix(tok, "s")
	if !ok {
		return t, fmt.Errorf("unknown token %q", tok)
	}
	fields := strings.Split(rest, "_")
	if len(fields) > syncSlots {
		return t, fmt.Errorf("malformed token %q", tok)
	}
	for i, f := range fields {
		// ParseUint alone accepts "+1" nowhere, but not "" either: every field is digits.
		p, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return t, fmt.Errorf("malformed token %q", tok)
		}
		t[i] = p
	}
	return t, nil
}

// Pagination tokens are "t<seq>_<idx>": the boundary just before the event at that
// position. A sync token s<seq> is the boundary after all of message seq.
func formatPageToken(p persist.Pos) string {
	return "t" + strconv.FormatUint(p.Seq, 10) + "_" + strconv.Itoa(p.Idx)
}

func parsePageToken(tok string) (persist.Pos, error) {
	if strings.HasPrefix(tok, "s") {
		t, err := parseSyncToken(tok)
		return persist.Pos{Seq: t[slotEvents] + 1}, err
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
