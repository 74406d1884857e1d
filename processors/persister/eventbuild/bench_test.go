package eventbuild

import (
	"testing"
	"time"
)

// benchEvent is a message event with about 180 bytes of m.text content, in a room of
// version 11.
func benchEvent() *Event {
	return &Event{
		RoomVersion: "11",
		RoomID:      "!OpaqueRoomIdentifier:example.org",
		Sender:      "@alice:example.org",
		Type:        "m.room.message",
		Content:     []byte(`{"msgtype":"m.text","body":"Hello there! This is a message of about the size people send, with a little punctuation, an é, and an emoji 🎉 at the end.","m.mentions":{}}`),
		PrevEvents:  []string{"$jm26rxk53HN5yVrTL8cLwpF_Tpsle3ULD5sAEw3wwrQ"},
		AuthEvents: []string{"$VXmkP1qCMSnLbI4f7z73Yh8gBZElLxgS_UJPh1ILICM", "$Z64L_Ha65-zPpGkl6M3b8uvXWlCp2B8Z1_42d0Cfh-s",
			"$DhCE94H035QilJS-YivhySfx0CffjA60zMs4uVCUM6A"},
		Depth: 1234,
		Time:  time.UnixMilli(1700000000000),
	}
}

func BenchmarkBuild(b *testing.B) {
	k := newTestKey("example.org", "ed25519:a1", 1)
	e := benchEvent()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := k.signer.Build(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuildLibrary(b *testing.B) {
	k := newTestKey("example.org", "ed25519:a1", 1)
	e := benchEvent()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.libraryBuild(e); err != nil {
			b.Fatal(err)
		}
	}
}
