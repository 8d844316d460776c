package results

import (
	"testing"
	"time"

	"github.com/millrace/millrace/internal/warehouse"
)

func TestSweepRemovesOnlyOldResults(t *testing.T) {
	t.Parallel()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	write := func(key string) {
		w, err := s.Create(key)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.SetColumns([]warehouse.Column{{Name: "n", Type: "integer"}}); err != nil {
			t.Fatal(err)
		}
		if err := w.Write([]any{1}); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	write("old")
	cutoff := time.Now().UTC()
	for !time.Now().After(cutoff.Add(time.Millisecond)) { // "new" must be written strictly after the cutoff
	}
	write("new")
	n, err := s.Sweep(cutoff)
	if err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	if _, err := s.Meta("old"); err == nil {
		t.Fatal("old result survived the sweep")
	}
	if _, err := s.Meta("new"); err != nil {
		t.Fatalf("new result was swept: %v", err)
	}
}
