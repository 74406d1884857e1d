package media

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFilesPutOpen(t *testing.T) {
	f := Files{Root: t.TempDir()}
	if err := f.Init(); err != nil {
		t.Fatal(err)
	}
	sha, size, err := f.Put(bytes.NewReader([]byte("hello")), 5)
	if err != nil || size != 5 || sha != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" {
		t.Fatalf("Put: %s %d %v", sha, size, err)
	}
	// The same content again: the same file, nothing left in tmp.
	if again, _, err := f.Put(bytes.NewReader([]byte("hello")), 5); err != nil || again != sha {
		t.Fatalf("Put again: %s %v", again, err)
	}
	if _, _, err := f.Put(bytes.NewReader([]byte("toolong")), 5); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Put over the bound: %v", err)
	}
	if left, _ := os.ReadDir(filepath.Join(f.Root, "tmp")); len(left) != 0 {
		t.Errorf("tmp holds %d files after the uploads", len(left))
	}
	r, err := f.Open(sha)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(r)
	r.Close()
	if string(data) != "hello" {
		t.Errorf("Open: %q", data)
	}
	if _, err := f.Open("00" + sha[2:]); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open of unknown content: %v", err)
	}
}

func TestRemoveStale(t *testing.T) {
	f := Files{Root: t.TempDir()}
	if err := f.Init(); err != nil {
		t.Fatal(err)
	}
	old, fresh := filepath.Join(f.Root, "tmp", "upload-old"), filepath.Join(f.Root, "tmp", "upload-fresh")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if n, err := f.RemoveStale(time.Hour); n != 1 || err != nil {
		t.Fatalf("RemoveStale: %d %v, want 1", n, err)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Error("the stale file is still there")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("the fresh file went: %v", err)
	}
}
