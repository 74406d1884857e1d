package userstreams

import (
	"encoding/json"
	"testing"
)

// FuzzCheckCrossSigningKey: any cross-signing key object is refused with a KeyError or
// accepted with its single ed25519 public key, in canonical JSON that checks again.
func FuzzCheckCrossSigningKey(f *testing.F) {
	const pub = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik"
	for _, s := range []string{
		`{"user_id":"@a:h","usage":["master"],"keys":{"ed25519:` + pub + `":"` + pub + `"}}`,
		`{"user_id":"@a:h","usage":["master"],"keys":{"ed25519:x":"y"}}`, `{"user_id":"@b:h"}`, `{"keys":{}}`, `[]`, `null`,
		`{"user_id":"@a:h","usage":["self_signing"],"keys":{"ed25519:` + pub + `":"` + pub + `"},"signatures":{"@a:h":{"ed25519:` + pub + `":"AAAA"}}}`,
	} {
		f.Add([]byte(s), "master")
	}
	f.Fuzz(func(t *testing.T, raw []byte, typ string) {
		if !json.Valid(raw) {
			return // the gateway decoded the body already
		}
		pub, canonical, err := CheckCrossSigningKey(raw, "@a:h", typ, "")
		if err != nil {
			if _, ok := err.(*KeyError); !ok {
				t.Fatalf("%q: error %v is not a KeyError", raw, err)
			}
			return
		}
		if _, err := PublicKey(pub); err != nil {
			t.Fatalf("%q: accepted public key %q: %v", raw, pub, err)
		}
		if again, _, err := CheckCrossSigningKey(canonical, "@a:h", typ, ""); err != nil || again != pub {
			t.Fatalf("%q: canonical form checks as %q, %v", raw, again, err)
		}
	})
}
