// Package results stores query results as files so that clients can page
// through them long after the query ran, without the warehouse.
//
// A result with key K is three files in the store's directory:
//
//	K.<gen>.ndjson  one JSON array per row, in result order
//	K.<gen>.idx     little-endian uint64 byte offsets of rows 0, IndexEvery, 2*IndexEvery, ...
//	K.meta.json     columns, row count and the generation <gen> of the data
//
// The data and index are written under fresh names and the meta file is
// renamed into place last, so a reader sees either the previous complete
// result or the new one, never a half-written file. Page seeks through the
// sparse index and reads at most IndexEvery-1 rows it does not return.
package results

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/millrace/millrace/internal/warehouse"
)

const (
	// IndexEvery is the number of rows between two index entries: paging
	// reads at most this many rows before the first one it returns.
	IndexEvery = 100
	// MaxKeyLen keeps file names well within the 255-byte limit of most
	// file systems.
	MaxKeyLen = 128

	formatVersion  = 1
	dirPerm        = 0o750
	filePerm       = 0o640
	tmpSuffix      = ".tmp"
	writeBufSize   = 256 << 10
	readBufSize    = 64 << 10
	maxRowLineSize = 1 << 30 // a single row larger than this is refused on read
	// openRetries bounds how often a reader retries when a result is
	// replaced between reading its meta file and opening its data.
	openRetries = 3
)

var (
	// ErrNotFound means no complete result exists under the key.
	ErrNotFound = errors.New("result not found")
	keyPattern  = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// PageRangeError is returned for a page outside the result.
type PageRangeError struct {
	Page, PageSize int
	// TotalPages is the number of valid pages (at least 1: an empty result
	// has one empty page).
	TotalPages int
}

func (e *PageRangeError) Error() string {
	return fmt.Sprintf("page %d is out of range: with pageSize %d the valid pages are 1 to %d", e.Page, e.PageSize, e.TotalPages)
}

// TotalPages is the number of pages of pageSize rows (at least 1).
func TotalPages(totalRows int64, pageSize int) int {
	if totalRows == 0 || pageSize < 1 {
		return 1
	}
	return int((totalRows + int64(pageSize) - 1) / int64(pageSize))
}

// Meta describes a complete result.
type Meta struct {
	Columns   []warehouse.Column `json:"columns"`
	TotalRows int64              `json:"totalRows"`
	// Bytes is the size of the row data file.
	Bytes     int64     `json:"bytes"`
	CreatedAt time.Time `json:"createdAt"`
}

// metaFile is what K.meta.json holds.
type metaFile struct {
	Version    int    `json:"version"`
	Generation string `json:"generation"`
	IndexEvery int    `json:"indexEvery"`
	Meta
}

// Store is a directory of results. It is safe for concurrent use, also by
// several processes sharing the directory.
type Store struct {
	dir string
}

// Open uses dir (creating it if needed) as a results store.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("results directory is empty: set MILLRACE_RESULTS_DIR to a writable directory")
	}
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return nil, fmt.Errorf("creating results directory: %w; set MILLRACE_RESULTS_DIR to a writable directory", err)
	}
	return &Store{dir: dir}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

func checkKey(key string) error {
	if len(key) > MaxKeyLen || !keyPattern.MatchString(key) {
		return fmt.Errorf("invalid result key %q: use 1 to %d letters, digits, '_' or '-'", key, MaxKeyLen)
	}
	return nil
}

func (s *Store) metaPath(key string) string { return filepath.Join(s.dir, key+".meta.json") }
func (s *Store) dataPath(key, gen string) string {
	return filepath.Join(s.dir, key+"."+gen+".ndjson")
}
func (s *Store) indexPath(key, gen string) string {
	return filepath.Join(s.dir, key+"."+gen+".idx")
}

func (s *Store) readMeta(key string) (metaFile, error) {
	var m metaFile
	if err := checkKey(key); err != nil {
		return m, err
	}
	b, err := os.ReadFile(s.metaPath(key))
	if errors.Is(err, fs.ErrNotExist) {
		return m, fmt.Errorf("result %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return m, fmt.Errorf("reading result %s: %w", key, err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("result %s has a corrupt meta file (%v); delete it and run the query again", key, err)
	}
	if m.Version != formatVersion || m.IndexEvery < 1 || checkKey(m.Generation) != nil {
		return m, fmt.Errorf("result %s was written in an unsupported format (version %d); run the query again", key, m.Version)
	}
	return m, nil
}

// Meta returns the description of the complete result under key.
func (s *Store) Meta(key string) (Meta, error) {
	m, err := s.readMeta(key)
	return m.Meta, err
}

// result is an opened complete result. Both files are opened before
// anything is read, so a concurrent replacement cannot pair this data with
// another version's index.
type result struct {
	metaFile
	data, index *os.File
}

func (r *result) Close() {
	r.data.Close()
	if r.index != nil {
		r.index.Close()
	}
}

// openResult reads the meta file and opens the files it names, retrying
// when a concurrent Close or Delete replaced them in between. withIndex
// is false for readers that go through all rows.
func (s *Store) openResult(key string, withIndex bool) (*result, error) {
	for range openRetries {
		m, err := s.readMeta(key)
		if err != nil {
			return nil, err
		}
		r := &result{metaFile: m}
		r.data, err = os.Open(s.dataPath(key, m.Generation))
		if err == nil && withIndex {
			if r.index, err = os.Open(s.indexPath(key, m.Generation)); err != nil {
				r.data.Close()
			}
		}
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("opening result %s: %w", key, err)
		}
		return r, nil
	}
	return nil, fmt.Errorf("result %s: %w (it was replaced or deleted while being read)", key, ErrNotFound)
}

// Page returns rows (page-1)*pageSize ... page*pageSize-1 as {column:
// value} maps. Numbers come back as json.Number, so 64-bit integers stay
// exact. A page past the end is a *PageRangeError; page 1 of an empty
// result is empty.
func (s *Store) Page(key string, page, pageSize int) ([]map[string]any, Meta, error) {
	if page < 1 || pageSize < 1 {
		return nil, Meta{}, fmt.Errorf("page %d with pageSize %d: page and pageSize start at 1", page, pageSize)
	}
	r, err := s.openResult(key, true)
	if err != nil {
		return nil, Meta{}, err
	}
	defer r.Close()
	m, f := r.metaFile, r.data
	start := int64(page-1) * int64(pageSize)
	if start >= m.TotalRows && (m.TotalRows > 0 || page > 1) {
		return nil, m.Meta, &PageRangeError{Page: page, PageSize: pageSize, TotalPages: TotalPages(m.TotalRows, pageSize)}
	}
	n := min(int64(pageSize), m.TotalRows-start)
	rows := make([]map[string]any, 0, n)
	if n == 0 {
		return rows, m.Meta, nil
	}

	// The offset of the last indexed row at or before start.
	var b [8]byte
	if _, err := r.index.ReadAt(b[:], start/int64(m.IndexEvery)*8); err != nil {
		return nil, m.Meta, corrupt(key, fmt.Errorf("index entry %d: %w", start/int64(m.IndexEvery), err))
	}
	offset := int64(binary.LittleEndian.Uint64(b[:]))
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, m.Meta, fmt.Errorf("reading result %s: %w", key, err)
	}
	lines := newLineReader(f)
	for skip := start % int64(m.IndexEvery); skip > 0; skip-- {
		if _, err := lines.next(); err != nil {
			return nil, m.Meta, corrupt(key, err)
		}
	}
	for range n {
		line, err := lines.next()
		if err != nil {
			return nil, m.Meta, corrupt(key, err)
		}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		var vals []any
		if err := dec.Decode(&vals); err != nil || len(vals) != len(m.Columns) {
			return nil, m.Meta, corrupt(key, fmt.Errorf("row %d does not match the columns: %v", start+int64(len(rows)), err))
		}
		row := make(map[string]any, len(vals))
		for i, c := range m.Columns {
			row[c.Name] = vals[i]
		}
		rows = append(rows, row)
	}
	return rows, m.Meta, nil
}

func corrupt(key string, err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("result %s is damaged (%v); delete it and run the query again", key, err)
}

// Stream writes every row to w as NDJSON, one {column: value} object per
// line with keys in column order.
func (s *Store) Stream(key string, w io.Writer) error {
	r, err := s.openResult(key, false)
	if err != nil {
		return err
	}
	defer r.Close()
	m, f := r.metaFile, r.data
	// Object keys are encoded once; each row's values are copied through
	// as the raw JSON they were stored as.
	keys := make([][]byte, len(m.Columns))
	for i, c := range m.Columns {
		k, _ := json.Marshal(c.Name)
		keys[i] = append(k, ':')
	}
	bw := bufio.NewWriterSize(w, readBufSize)
	lines := newLineReader(f)
	var vals []json.RawMessage
	for r := range m.TotalRows {
		line, err := lines.next()
		if err != nil {
			return corrupt(key, err)
		}
		vals = vals[:0]
		if err := json.Unmarshal(line, &vals); err != nil || len(vals) != len(keys) {
			return corrupt(key, fmt.Errorf("row %d does not match the columns: %v", r, err))
		}
		bw.WriteByte('{')
		for i, v := range vals {
			if i > 0 {
				bw.WriteByte(',')
			}
			bw.Write(keys[i])
			bw.Write(v)
		}
		if _, err := bw.WriteString("}\n"); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// Delete removes the result under key. Readers that already opened it
// finish reading it.
func (s *Store) Delete(key string) error {
	m, err := s.readMeta(key)
	if err != nil {
		return err
	}
	// The meta file goes first: once it is gone the result is invisible.
	if err := os.Remove(s.metaPath(key)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("result %s: %w", key, ErrNotFound)
		}
		return fmt.Errorf("deleting result %s: %w", key, err)
	}
	return errors.Join(removeIfExists(s.dataPath(key, m.Generation)), removeIfExists(s.indexPath(key, m.Generation)))
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// lineReader yields newline-terminated lines without their newline.
type lineReader struct{ r *bufio.Reader }

func newLineReader(f io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(f, readBufSize)}
}

func (l *lineReader) next() ([]byte, error) {
	line, err := l.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// A row longer than the buffer: collect it in pieces.
		buf := append([]byte(nil), line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(buf) > maxRowLineSize {
				return nil, fmt.Errorf("a row is larger than %d bytes", maxRowLineSize)
			}
			line, err = l.r.ReadSlice('\n')
			buf = append(buf, line...)
		}
		line = buf
	}
	if err != nil {
		return nil, err
	}
	return line[:len(line)-1], nil
}

// Writer writes one result. Call SetColumns, Write for every row, then
// Close to publish the result, or Abort to discard it.
type Writer struct {
	s        *Store
	key, gen string
	data     *os.File
	index    *os.File
	dataBuf  *bufio.Writer
	indexBuf *bufio.Writer
	columns  []warehouse.Column
	rows     int64
	offset   int64
	done     bool
	line     bytes.Buffer
	enc      *json.Encoder
}

// Create starts writing the result under key. An existing result under the
// same key stays readable until Close replaces it.
func (s *Store) Create(key string) (*Writer, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	var g [8]byte
	_, _ = rand.Read(g[:])
	w := &Writer{s: s, key: key, gen: strconv.FormatInt(time.Now().Unix(), 36) + hex.EncodeToString(g[:])}
	var err error
	if w.data, err = os.OpenFile(s.dataPath(key, w.gen)+tmpSuffix, os.O_CREATE|os.O_EXCL|os.O_WRONLY, filePerm); err != nil {
		return nil, fmt.Errorf("creating result %s: %w", key, err)
	}
	if w.index, err = os.OpenFile(s.indexPath(key, w.gen)+tmpSuffix, os.O_CREATE|os.O_EXCL|os.O_WRONLY, filePerm); err != nil {
		w.data.Close()
		os.Remove(w.data.Name())
		return nil, fmt.Errorf("creating result %s: %w", key, err)
	}
	w.dataBuf = bufio.NewWriterSize(w.data, writeBufSize)
	w.indexBuf = bufio.NewWriterSize(w.index, 4<<10)
	w.enc = json.NewEncoder(&w.line)
	w.enc.SetEscapeHTML(false)
	return w, nil
}

// SetColumns records the result's columns; it must come before Write.
// Duplicate names (SELECT 1, 2 gives two "?column?") get a numeric suffix
// so every value has its own key in a row object.
func (w *Writer) SetColumns(cols []warehouse.Column) error {
	if w.done {
		return errors.New("result writer is already closed")
	}
	if w.columns != nil {
		return errors.New("SetColumns was already called for this result")
	}
	seen := make(map[string]bool, len(cols))
	w.columns = make([]warehouse.Column, len(cols))
	for i, c := range cols {
		name := c.Name
		for n := 2; seen[name]; n++ {
			name = c.Name + "_" + strconv.Itoa(n)
		}
		seen[name] = true
		c.Name = name
		w.columns[i] = c
	}
	return nil
}

// Write appends one row; it has one value per column, each a value that
// encoding/json can encode.
func (w *Writer) Write(row []any) error {
	if w.done {
		return errors.New("result writer is already closed")
	}
	if w.columns == nil {
		return errors.New("SetColumns must be called before Write")
	}
	if len(row) != len(w.columns) {
		return fmt.Errorf("row %d has %d values for %d columns", w.rows, len(row), len(w.columns))
	}
	w.line.Reset()
	if err := w.enc.Encode(row); err != nil { // Encode adds the newline
		return fmt.Errorf("row %d cannot be stored as JSON: %w", w.rows, err)
	}
	if w.rows%IndexEvery == 0 {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], uint64(w.offset))
		if _, err := w.indexBuf.Write(b[:]); err != nil {
			return fmt.Errorf("writing result %s: %w", w.key, err)
		}
	}
	n, err := w.dataBuf.Write(w.line.Bytes())
	if err != nil {
		return fmt.Errorf("writing result %s: %w", w.key, err)
	}
	w.offset += int64(n)
	w.rows++
	return nil
}

// Rows is the number of rows written so far.
func (w *Writer) Rows() int64 { return w.rows }

// Close makes the result visible to readers, replacing any previous result
// under the key, and returns its Meta. On failure the partial files are
// removed.
func (w *Writer) Close() (Meta, error) {
	if w.done {
		return Meta{}, errors.New("result writer is already closed")
	}
	m, err := w.publish()
	if err != nil {
		w.Abort()
		return Meta{}, fmt.Errorf("saving result %s: %w", w.key, err)
	}
	return m, nil
}

func (w *Writer) publish() (Meta, error) {
	s := w.s
	cols := w.columns
	if cols == nil {
		cols = []warehouse.Column{}
	}
	mf := metaFile{Version: formatVersion, Generation: w.gen, IndexEvery: IndexEvery,
		Meta: Meta{Columns: cols, TotalRows: w.rows, Bytes: w.offset, CreatedAt: time.Now().UTC()}}
	for _, step := range []func() error{
		w.dataBuf.Flush, w.indexBuf.Flush,
		// Synced before the meta file names them, so a crash cannot leave
		// a meta file pointing at empty data.
		w.data.Sync, w.index.Sync, w.data.Close, w.index.Close,
		func() error { return os.Rename(w.data.Name(), s.dataPath(w.key, w.gen)) },
		func() error { return os.Rename(w.index.Name(), s.indexPath(w.key, w.gen)) },
	} {
		if err := step(); err != nil {
			return Meta{}, err
		}
	}
	previous, prevErr := s.readMeta(w.key)
	b, err := json.Marshal(mf)
	if err != nil {
		return Meta{}, err
	}
	tmp := s.metaPath(w.key) + "." + w.gen + tmpSuffix
	if err := writeSynced(tmp, b); err != nil {
		os.Remove(tmp)
		return Meta{}, err
	}
	if err := os.Rename(tmp, s.metaPath(w.key)); err != nil {
		os.Remove(tmp)
		return Meta{}, err
	}
	w.done = true
	syncDir(s.dir)
	if prevErr == nil && previous.Generation != w.gen {
		// Readers that already opened the old files keep reading them.
		removeIfExists(s.dataPath(w.key, previous.Generation))
		removeIfExists(s.indexPath(w.key, previous.Generation))
	}
	return mf.Meta, nil
}

// Abort discards the result: its partial files are removed and any
// previous result under the key is left as it was.
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.data.Close()
	w.index.Close()
	var errs []error
	for _, p := range []string{
		w.data.Name(), w.index.Name(),
		// Close may have got as far as renaming them.
		w.s.dataPath(w.key, w.gen), w.s.indexPath(w.key, w.gen),
	} {
		errs = append(errs, removeIfExists(p))
	}
	return errors.Join(errs...)
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, filePerm)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// syncDir makes the renames durable; file systems that cannot sync a
// directory lose only durability, so its error is ignored.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// Sweep deletes every result written before cutoff and returns how many it
// removed. The query reaper calls it with now - CACHE_STALE_TIME_SECONDS, so
// expired results do not fill the disk (a cache hit shares its source's
// files and expires with it).
func (s *Store) Sweep(cutoff time.Time) (int, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		key, ok := strings.CutSuffix(e.Name(), ".meta.json")
		if !ok || e.IsDir() {
			continue
		}
		m, err := s.readMeta(key)
		if err != nil || !m.CreatedAt.Before(cutoff) {
			continue
		}
		if err := s.Delete(key); err == nil {
			n++
		}
	}
	return n, nil
}
