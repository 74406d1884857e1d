package config

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestSigningKeyRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "example.org.signing.key")
	if err := GenerateSigningKey(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Synapse's layout: algorithm, a_ + 4 letters, unpadded base64 seed.
	if !regexp.MustCompile(`^ed25519 a_[A-Za-z]{4} [A-Za-z0-9+/]{43}\n$`).Match(data) {
		t.Fatalf("key file %q", data)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, %v", st.Mode(), err)
	}
	keyID, priv, err := LoadSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "ed25519:" + strings.Fields(string(data))[1]; keyID != want {
		t.Errorf("key id %q, want %q", keyID, want)
	}
	msg := []byte("{}")
	if !ed25519.Verify(priv.Public().(ed25519.PublicKey), msg, ed25519.Sign(priv, msg)) {
		t.Error("loaded key does not verify its own signature")
	}

	err = GenerateSigningKey(path)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("second GenerateSigningKey: %v", err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, data) {
		t.Error("the existing key was changed")
	}
}

func TestLoadSigningKey(t *testing.T) {
	// RFC 8032 test 1: the seed and the public key it derives.
	const seed = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
	public, _ := hex.DecodeString("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
	tests := []struct {
		name    string
		content string
		keyID   string
		err     string // substring after "config: <path>: "
	}{
		{"synapse file", "ed25519 a_AbCd " + seed + "\n", "ed25519:a_AbCd", ""},
		{"padded seed, blank lines, later keys", "\n  ed25519 auto " + seed + "=\ned25519 old " + seed + "\n", "ed25519:auto", ""},
		{"no key", "\n\n", "", "no signing key in the file"},
		{"two fields", "ed25519 " + seed, "", `line 1: want "ed25519 <version> <base64 seed>"`},
		{"other algorithm", "\ncurve25519 a_x " + seed, "", `line 2: unsupported algorithm "curve25519"`},
		{"bad version", "ed25519 a:b " + seed, "", `line 1: key version "a:b" must be letters`},
		{"short seed", "ed25519 a_x AAAA", "", "line 1: the seed must be 32 bytes in base64"},
		{"not base64", "ed25519 a_x " + strings.Repeat("*", 43), "", "line 1: the seed must be 32 bytes in base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "signing.key")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			keyID, priv, err := LoadSigningKey(path)
			if tt.err != "" {
				if want := "config: " + path + ": " + tt.err; err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("error %v, want %s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if keyID != tt.keyID || !bytes.Equal(priv.Public().(ed25519.PublicKey), public) {
				t.Errorf("key %q public %x", keyID, priv.Public())
			}
		})
	}

	missing := filepath.Join(t.TempDir(), "absent.key")
	if _, _, err := LoadSigningKey(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v", err)
	}
}
