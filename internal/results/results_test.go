package results

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/millrace/millrace/internal/warehouse"
)

var testColumns = []warehouse.Column{
	{Name: "id", Type: warehouse.TypeInteger, NativeType: "int8"},
	{Name: "name", Type: warehouse.TypeString},
	{Name: "even", Type: warehouse.TypeBoolean},
	{Name: "ratio", Type: warehouse.TypeNumber},
	{Name: "note", Type: warehouse.TypeString},
}

// testRow is row i of the standard test result.
func testRow(i int64) []any {
	var note any
	if i%7 == 0 {
		note = "line\nbreak \"quoted\" <html> ☃"
	}
	return []any{i, fmt.Sprintf("row-%d", i), i%2 == 0, float64(i) / 4, note}
}

type testBundle struct {
	store *Store
	dir   string
}

func setup(t testing.TB) *testBundle {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &testBundle{store: s, dir: dir}
}

// write stores n standard rows under key.
func (b *testBundle) write(t testing.TB, key string, n int64) Meta {
	t.Helper()
	w, err := b.store.Create(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SetColumns(testColumns); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := w.Write(testRow(i)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (b *testBundle) files(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(b.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// checkRow compares a row read back with testRow(i).
func checkRow(t testing.TB, i int64, got map[string]any) {
	t.Helper()
	want := testRow(i)
	if len(got) != len(testColumns) {
		t.Fatalf("row %d has %d values: %v", i, len(got), got)
	}
	if got["id"] != json.Number(fmt.Sprint(i)) || got["name"] != want[1] || got["even"] != want[2] ||
		got["ratio"] != json.Number(fmt.Sprint(want[3])) || got["note"] != want[4] {
		t.Fatalf("row %d = %v, want %v", i, got, want)
	}
}

func TestWriteAndPageThroughAll(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const total = 100_000
	m := b.write(t, "q1", total)
	if m.TotalRows != total || m.Bytes <= 0 || m.CreatedAt.IsZero() || len(m.Columns) != len(testColumns) {
		t.Fatalf("meta = %+v", m)
	}
	got, err := b.store.Meta("q1")
	if err != nil || got.TotalRows != total || got.Bytes != m.Bytes || got.Columns[0] != testColumns[0] {
		t.Fatalf("Meta = %+v, %v", got, err)
	}
	if st, err := os.Stat(b.store.dataPath("q1", mustMeta(t, b.store, "q1").Generation)); err != nil || st.Size() != m.Bytes {
		t.Fatalf("data file: %v, %v (want %d bytes)", st, err, m.Bytes)
	}

	for _, pageSize := range []int{5000, 500, 333} {
		t.Run(fmt.Sprintf("pageSize=%d", pageSize), func(t *testing.T) {
			t.Parallel()
			next := int64(0)
			pages := TotalPages(total, pageSize)
			for page := 1; page <= pages; page++ {
				rows, pm, err := b.store.Page("q1", page, pageSize)
				if err != nil {
					t.Fatalf("page %d: %v", page, err)
				}
				if pm.TotalRows != total {
					t.Fatalf("page %d meta: %+v", page, pm)
				}
				wantLen := min(pageSize, total-int(next))
				if len(rows) != wantLen {
					t.Fatalf("page %d has %d rows, want %d", page, len(rows), wantLen)
				}
				for _, r := range rows {
					checkRow(t, next, r)
					next++
				}
			}
			if next != total {
				t.Fatalf("read %d rows, want %d", next, total)
			}
			if _, _, err := b.store.Page("q1", pages+1, pageSize); err == nil {
				t.Fatalf("page %d past the end: no error", pages+1)
			}
		})
	}
}

func mustMeta(t testing.TB, s *Store, key string) metaFile {
	t.Helper()
	m, err := s.readMeta(key)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPageEdges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.write(t, "small", 250)

	rows, _, err := b.store.Page("small", 1, 100)
	if err != nil || len(rows) != 100 {
		t.Fatalf("first page: %d rows, %v", len(rows), err)
	}
	checkRow(t, 0, rows[0])
	checkRow(t, 99, rows[99])

	rows, _, err = b.store.Page("small", 3, 100) // partial last page
	if err != nil || len(rows) != 50 {
		t.Fatalf("last page: %d rows, %v", len(rows), err)
	}
	checkRow(t, 200, rows[0])
	checkRow(t, 249, rows[49])

	rows, _, err = b.store.Page("small", 1, 5000) // one page holds everything
	if err != nil || len(rows) != 250 {
		t.Fatalf("single page: %d rows, %v", len(rows), err)
	}

	rows, _, err = b.store.Page("small", 2, 7) // straddles no index entry
	if err != nil || len(rows) != 7 {
		t.Fatalf("page 2 of 7: %d rows, %v", len(rows), err)
	}
	checkRow(t, 7, rows[0])

	_, _, err = b.store.Page("small", 4, 100)
	var rangeErr *PageRangeError
	if !errors.As(err, &rangeErr) || rangeErr.TotalPages != 3 || rangeErr.Page != 4 {
		t.Fatalf("page past the end: %v", err)
	}
	if !strings.Contains(err.Error(), "valid pages are 1 to 3") {
		t.Fatalf("page past the end does not give the range: %v", err)
	}
	for _, bad := range [][2]int{{0, 10}, {-1, 10}, {1, 0}} {
		if _, _, err := b.store.Page("small", bad[0], bad[1]); err == nil {
			t.Fatalf("Page(%d, %d): no error", bad[0], bad[1])
		}
	}

	// An empty result has one empty page.
	b.write(t, "empty", 0)
	rows, m, err := b.store.Page("empty", 1, 500)
	if err != nil || len(rows) != 0 || m.TotalRows != 0 || len(m.Columns) != len(testColumns) {
		t.Fatalf("empty result page 1: %v, %+v, %v", rows, m, err)
	}
	if _, _, err := b.store.Page("empty", 2, 500); !errors.As(err, &rangeErr) || rangeErr.TotalPages != 1 {
		t.Fatalf("empty result page 2: %v", err)
	}
}

func TestNotFoundAndBadKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.store.Meta("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Meta: %v", err)
	}
	if _, _, err := b.store.Page("nope", 1, 10); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Page: %v", err)
	}
	if err := b.store.Stream("nope", &bytes.Buffer{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stream: %v", err)
	}
	if err := b.store.Delete("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Delete: %v", err)
	}
	for _, key := range []string{"", "../x", "a.b", "a/b", strings.Repeat("k", MaxKeyLen+1)} {
		if _, err := b.store.Create(key); err == nil {
			t.Fatalf("Create(%q): no error", key)
		}
		if _, err := b.store.Meta(key); err == nil || errors.Is(err, ErrNotFound) {
			t.Fatalf("Meta(%q): %v, want an invalid key error", key, err)
		}
	}
	if _, err := Open(""); err == nil || !strings.Contains(err.Error(), "MILLRACE_RESULTS_DIR") {
		t.Fatalf("Open(\"\"): %v", err)
	}
}

func TestInvisibleUntilCloseAndAbort(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w, err := b.store.Create("q")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(testRow(0)); err == nil {
		t.Fatal("Write before SetColumns: no error")
	}
	if err := w.SetColumns(testColumns); err != nil {
		t.Fatal(err)
	}
	if err := w.Write([]any{1}); err == nil {
		t.Fatal("Write with too few values: no error")
	}
	for i := range int64(1000) {
		if err := w.Write(testRow(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.store.Meta("q"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a result being written is visible: %v", err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if files := b.files(t); len(files) != 0 {
		t.Fatalf("Abort left files: %v", files)
	}
	if _, err := w.Close(); err == nil {
		t.Fatal("Close after Abort: no error")
	}

	// Aborting a replacement leaves the previous result as it was.
	b.write(t, "q", 10)
	before := b.files(t)
	w, err = b.store.Create("q")
	if err != nil {
		t.Fatal(err)
	}
	w.SetColumns(testColumns)
	w.Write(testRow(99))
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if after := b.files(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("files after aborted replacement: %v, before: %v", after, before)
	}
	if m, err := b.store.Meta("q"); err != nil || m.TotalRows != 10 {
		t.Fatalf("previous result after aborted replacement: %+v, %v", m, err)
	}
}

func TestReplaceAndDelete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.write(t, "q", 10)
	b.write(t, "q", 20)
	if m, err := b.store.Meta("q"); err != nil || m.TotalRows != 20 {
		t.Fatalf("replaced result: %+v, %v", m, err)
	}
	if files := b.files(t); len(files) != 3 {
		t.Fatalf("replacing left old files behind: %v", files)
	}
	if err := b.store.Delete("q"); err != nil {
		t.Fatal(err)
	}
	if files := b.files(t); len(files) != 0 {
		t.Fatalf("Delete left files: %v", files)
	}
	if _, _, err := b.store.Page("q", 1, 10); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Page after Delete: %v", err)
	}
}

func TestDuplicateColumnNames(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w, _ := b.store.Create("dup")
	w.SetColumns([]warehouse.Column{{Name: "?column?"}, {Name: "?column?"}, {Name: "?column?_2"}})
	w.Write([]any{1, 2, 3})
	m, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range m.Columns {
		names = append(names, c.Name)
	}
	if fmt.Sprint(names) != "[?column? ?column?_2 ?column?_2_2]" {
		t.Fatalf("columns: %v", names)
	}
	rows, _, err := b.store.Page("dup", 1, 10)
	if err != nil || len(rows[0]) != 3 {
		t.Fatalf("rows: %v, %v", rows, err)
	}
}

func TestStream(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const total = 10_000
	b.write(t, "q", total)
	var out bytes.Buffer
	if err := b.store.Stream("q", &out); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&out)
	var n int64
	for sc.Scan() {
		line := sc.Text()
		if n == 0 && line != `{"id":0,"name":"row-0","even":true,"ratio":0,"note":"line\nbreak \"quoted\" <html> ☃"}` {
			t.Fatalf("line 0 = %s", line)
		}
		if n == 1 && line != `{"id":1,"name":"row-1","even":false,"ratio":0.25,"note":null}` {
			t.Fatalf("line 1 = %s", line)
		}
		dec := json.NewDecoder(strings.NewReader(line))
		dec.UseNumber()
		var row map[string]any
		if err := dec.Decode(&row); err != nil {
			t.Fatalf("line %d is not a JSON object: %v: %s", n, err, line)
		}
		checkRow(t, n, row)
		n++
	}
	if n != total {
		t.Fatalf("streamed %d rows, want %d", n, total)
	}
}

// TestConcurrentReaders pages from many goroutines while the result is
// replaced under them: every page must come whole from one version.
func TestConcurrentReaders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const total = 2000
	b.write(t, "q", total)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 100)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				page := 1 + (g*31+i*17)%(total/50)
				rows, m, err := b.store.Page("q", page, 50)
				if err != nil {
					errs <- fmt.Errorf("page %d: %w", page, err)
					return
				}
				if m.TotalRows != total || len(rows) != 50 {
					errs <- fmt.Errorf("page %d: %d rows, meta %+v", page, len(rows), m)
					return
				}
				for j, r := range rows {
					if want := fmt.Sprintf("row-%d", (page-1)*50+j); r["name"] != want {
						errs <- fmt.Errorf("page %d row %d = %v, want %s", page, j, r["name"], want)
						return
					}
				}
			}
		}()
	}
	for range 8 {
		b.write(t, "q", total) // same content, new generation each time
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if files := b.files(t); len(files) != 3 {
		t.Fatalf("replacements left old files: %v", files)
	}
}

// liveHeap is the heap in use after a collection.
func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestBoundedMemory writes and streams 150,000 rows (about 6 MB of data)
// and checks that the live heap never grows by more than a few MB. Not
// parallel: it measures the process heap.
func TestBoundedMemory(t *testing.T) {
	b := setup(t)
	const total = 150_000
	const maxGrowth = 4 << 20
	base := liveHeap()
	var peak int64
	sample := func() { peak = max(peak, liveHeap()-base) }

	w, err := b.store.Create("big")
	if err != nil {
		t.Fatal(err)
	}
	w.SetColumns(testColumns)
	for i := range int64(total) {
		if err := w.Write(testRow(i)); err != nil {
			t.Fatal(err)
		}
		if i%20_000 == 0 {
			sample()
		}
	}
	m, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	sw := &sampleWriter{every: 20, sample: sample} // Stream writes 64 KB at a time
	if err := b.store.Stream("big", sw); err != nil {
		t.Fatal(err)
	}
	if sw.bytes < m.Bytes {
		t.Fatalf("streamed %d bytes, less than the %d stored", sw.bytes, m.Bytes)
	}
	t.Logf("stored %d bytes; peak live heap growth %d KB", m.Bytes, peak>>10)
	if peak > maxGrowth {
		t.Fatalf("live heap grew by %d bytes while writing and streaming %d rows, want under %d", peak, total, maxGrowth)
	}
}

type sampleWriter struct {
	every, writes int
	bytes         int64
	sample        func()
}

func (s *sampleWriter) Write(p []byte) (int, error) {
	s.writes++
	s.bytes += int64(len(p))
	if s.writes%s.every == 0 {
		s.sample()
	}
	return len(p), nil
}

// BenchmarkPage reads the first and the last page of a 100,000-row result:
// with the sparse index both cost about the same.
func BenchmarkPage(b *testing.B) {
	tb := setup(b)
	const total, pageSize = 100_000, 500
	tb.write(b, "bench", total)
	for _, page := range []int{1, TotalPages(total, pageSize) / 2, TotalPages(total, pageSize)} {
		b.Run(fmt.Sprintf("page=%d", page), func(b *testing.B) {
			for b.Loop() {
				rows, _, err := tb.store.Page("bench", page, pageSize)
				if err != nil || len(rows) != pageSize {
					b.Fatalf("%d rows, %v", len(rows), err)
				}
			}
		})
	}
}
