package config

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Signing keys use Synapse's file format, so a key file moves between
// Synapse and Ganglion unchanged: one key per line,
//
//	ed25519 <version> <seed>
//
// where the seed is the 32-byte ed25519 seed in unpadded standard base64.
// The key's id is "ed25519:<version>"; the first line is the signing key.

var keyVersionRE = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

// GenerateSigningKey writes a new signing key to path, creating its
// directory if needed. It refuses to overwrite an existing file (the error
// then wraps fs.ErrExist): replacing a server's key breaks the signatures
// other servers have cached.
func GenerateSigningKey(path string) error {
	seed := make([]byte, ed25519.SeedSize)
	rand.Read(seed)
	// Synapse names versions "a_" plus four random letters.
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var rnd [4]byte
	rand.Read(rnd[:])
	version := []byte("a_")
	for _, b := range rnd {
		version = append(version, letters[int(b)%len(letters)])
	}
	line := fmt.Sprintf("ed25519 %s %s\n", version, base64.RawStdEncoding.EncodeToString(seed))

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("config: %s: refusing to overwrite the existing signing key: %w", path, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	_, err = f.WriteString(line)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// LoadSigningKey reads the signing key (the first key) from a key file.
// SigningKey reads the server's signing key from signing_key_path; an error names the
// configuration file and the key, as the loader's do.
func (c *Config) SigningKey() (keyID string, priv ed25519.PrivateKey, err error) {
	keyID, priv, err = LoadSigningKey(c.SigningKeyPath)
	if err != nil {
		return "", nil, &Error{File: c.originOf("signing_key_path"), Key: "signing_key_path", Reason: strings.TrimPrefix(err.Error(), "config: ")}
	}
	return keyID, priv, nil
}

func LoadSigningKey(path string) (keyID string, priv ed25519.PrivateKey, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", nil, fmt.Errorf("config: signing key: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		fail := func(reason string) (string, ed25519.PrivateKey, error) {
			return "", nil, fmt.Errorf("config: %s: line %d: %s", path, n, reason)
		}
		parts := strings.Fields(line)
		if len(parts) != 3 {
			return fail(`want "ed25519 <version> <base64 seed>"`)
		}
		if parts[0] != "ed25519" {
			return fail(fmt.Sprintf("unsupported algorithm %q, want ed25519", parts[0]))
		}
		if !keyVersionRE.MatchString(parts[1]) {
			return fail(fmt.Sprintf("key version %q must be letters, digits or '_'", parts[1]))
		}
		// Synapse writes the seed unpadded but reads either form.
		seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(parts[2], "="))
		if err != nil || len(seed) != ed25519.SeedSize {
			return fail("the seed must be 32 bytes in base64")
		}
		return "ed25519:" + parts[1], ed25519.NewKeyFromSeed(seed), nil
	}
	if err := sc.Err(); err != nil {
		return "", nil, fmt.Errorf("config: %s: %w", path, err)
	}
	return "", nil, errors.New("config: " + path + ": no signing key in the file")
}
