package pgdriver_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/internal/store/pgdriver"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
)

// TestPoolSize: a DATABASE_URL without pool_max_conns gets DefaultMaxConns,
// not pgxpool's max(4, CPUs); the URL's own setting and Options win.
func TestPoolSize(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		suffix string
		opts   pgdriver.Options
		want   int32
	}{
		{"Default", "", pgdriver.Options{}, pgdriver.DefaultMaxConns()},
		{"URL", "&pool_max_conns=3", pgdriver.Options{}, 3},
		{"Options", "&pool_max_conns=3", pgdriver.Options{MaxConns: 5}, 5},
	}
	if pgdriver.DefaultMaxConns() < 16 {
		t.Fatalf("DefaultMaxConns = %d, want at least 16", pgdriver.DefaultMaxConns())
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := openUnmigrated(t, pgtest.NewSchema(t)+c.suffix, c.opts)
			if got := d.Pool().Config().MaxConns; got != c.want {
				t.Fatalf("MaxConns = %d, want %d", got, c.want)
			}
		})
	}
}

// TestPoolMetrics: the pool's counters reach the default registry, which
// the server's /metrics serves, and count an open driver's acquires.
func TestPoolMetrics(t *testing.T) {
	t.Parallel()
	d := openUnmigrated(t, pgtest.NewSchema(t)+"&pool_max_conns=2", pgdriver.Options{})
	for range 3 {
		if _, err := d.Pool().Exec(t.Context(), "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "millrace_db_pool_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			got[mf.GetName()] += v
		}
	}
	// Other tests' drivers run in this process too, so the sums are lower
	// bounds.
	if got["millrace_db_pool_max_connections"] < 2 {
		t.Errorf("millrace_db_pool_max_connections = %g, want >= 2", got["millrace_db_pool_max_connections"])
	}
	if got["millrace_db_pool_acquires_total"] < 3 {
		t.Errorf("millrace_db_pool_acquires_total = %g, want >= 3", got["millrace_db_pool_acquires_total"])
	}
	for _, name := range []string{"millrace_db_pool_connections", "millrace_db_pool_waited_acquires_total",
		"millrace_db_pool_acquire_wait_seconds_total", "millrace_db_pool_cancelled_acquires_total"} {
		if _, ok := got[name]; !ok {
			t.Errorf("%s missing from the registry", name)
		}
	}
}
