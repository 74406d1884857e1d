package schemas

import "testing"

// Synapse's to_device row names the local user whose inbox changed: [entity].
func TestToDeviceRow(t *testing.T) {
	t.Parallel()
	got, err := EncodeJSON(ToDeviceRow{Entity: "@ü:example.com"})
	if err != nil || string(got) != `["@\u00fc:example.com"]` {
		t.Errorf("row %s, %v", got, err)
	}
}

// FuzzDecodeToDevice feeds arbitrary bytes to the to_device record decoder, which reads
// what any process on the bus published: it never panics, and what it accepts is
// exactly one of a message with its recipient, sender, type and content, or a
// transaction id with its device.
func FuzzDecodeToDevice(f *testing.F) {
	f.Add([]byte(`{"v":1,"message":{"user":"@b:h","device":"D","sender":"@a:h","type":"m.x","content":{"k":1}}}`))
	f.Add([]byte(`{"v":1,"txn":{"sender":"@a:h","device":"D","txn":"t1"}}`))
	f.Add([]byte(`{"v":1,"message":{"user":"@b:h"},"txn":{"sender":"@a:h","device":"D","txn":"t1"}}`))
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{"v":2,"txn":{"sender":"@a:h","device":"D","txn":"t1"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeToDevice(data)
		if err != nil {
			return
		}
		switch m, x := r.Message, r.Txn; {
		case (m == nil) == (x == nil):
			t.Fatalf("record %s: both or neither", data)
		case m != nil && (m.User == "" || m.Device == "" || m.Sender == "" || m.Type == "" || !IsObject(m.Content)):
			t.Fatalf("message %+v", m)
		case x != nil && (x.Sender == "" || x.Device == "" || x.Txn == ""):
			t.Fatalf("transaction %+v", x)
		}
	})
}
