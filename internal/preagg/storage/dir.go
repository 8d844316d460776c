package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const (
	dirPerm  = 0o750
	filePerm = 0o640
	// tmpPrefix marks a file being written; Get never sees one, and
	// OpenDir removes the leftovers of a crash.
	tmpPrefix = ".tmp-"
)

// Dir keeps objects as files under a directory: for dev mode and a server
// whose workers share its disk.
type Dir struct {
	root string
}

var _ Local = (*Dir)(nil)

// OpenDir opens (creating it if needed) the directory root as a Store.
func OpenDir(root string) (*Dir, error) {
	if root == "" {
		return nil, errors.New("storage: the materialization directory is empty: set PRE_AGGREGATE_DIR")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	if err := os.MkdirAll(abs, dirPerm); err != nil {
		return nil, fmt.Errorf("storage: create the materialization directory: %w", err)
	}
	// A crash mid-Put leaves a temp file no key names: remove them.
	_ = filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), tmpPrefix) {
			os.Remove(p)
		}
		return nil
	})
	return &Dir{root: abs}, nil
}

func (d *Dir) path(key string) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	return filepath.Join(d.root, filepath.FromSlash(key)), nil
}

// Put writes to a temp file beside the target and renames it into place,
// so the object appears complete or not at all.
func (d *Dir) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	p, err := d.path(key)
	if err != nil {
		return 0, err
	}
	// A concurrent Delete may remove the directory it just emptied between
	// MkdirAll and CreateTemp: try again then.
	var f *os.File
	for try := 0; ; try++ {
		if err := os.MkdirAll(filepath.Dir(p), dirPerm); err != nil {
			return 0, fmt.Errorf("storage: %w", err)
		}
		f, err = os.CreateTemp(filepath.Dir(p), tmpPrefix+"*")
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || try == 3 {
			return 0, fmt.Errorf("storage: %w", err)
		}
	}
	tmp := f.Name()
	fail := func(err error) (int64, error) {
		f.Close()
		os.Remove(tmp)
		return 0, fmt.Errorf("storage: writing %s: %w", key, err)
	}
	n, err := io.Copy(f, ctxReader{ctx, r})
	if err != nil {
		return fail(err)
	}
	if err := f.Chmod(filePerm); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("storage: writing %s: %w", key, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("storage: writing %s: %w", key, err)
	}
	return n, nil
}

// Get copies the object into w.
func (d *Dir) Get(ctx context.Context, key string, w io.Writer) error {
	p, err := d.Path(key)
	if err != nil {
		return err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("storage: %s: %w", key, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(w, ctxReader{ctx, f}); err != nil {
		return fmt.Errorf("storage: reading %s: %w", key, err)
	}
	return nil
}

// Path is the object's file.
func (d *Dir) Path(key string) (string, error) {
	p, err := d.path(key)
	if err != nil {
		return "", err
	}
	if st, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) || (err == nil && !st.Mode().IsRegular()) {
		return "", fmt.Errorf("storage: %s: %w", key, ErrNotFound)
	} else if err != nil {
		return "", fmt.Errorf("storage: %w", err)
	}
	return p, nil
}

// Delete removes the object's file (absent is fine) and the directories
// it leaves empty, up to the root.
func (d *Dir) Delete(_ context.Context, key string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("storage: %w", err)
	}
	for dir := filepath.Dir(p); dir != d.root && strings.HasPrefix(dir, d.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil { // not empty (or gone): stop
			break
		}
	}
	return nil
}

func (d *Dir) String() string { return "dir:" + d.root }

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
