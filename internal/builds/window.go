package builds

import (
	"time"

	"github.com/millrace/millrace/internal/semantic"
)

// partitionKeyLayout is a partition's key: its start date.
const partitionKeyLayout = "2006-01-02"

// partitionStart truncates t (UTC) to the start of its partition.
func partitionStart(by semantic.Grain, t time.Time) time.Time {
	t = t.UTC()
	if by == semantic.GrainMonth {
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

func nextPartition(by semantic.Grain, t time.Time) time.Time {
	if by == semantic.GrainMonth {
		return t.AddDate(0, 1, 0)
	}
	return t.AddDate(0, 0, 1)
}

// windowKeys are the keys of the partitions a refresh at now recomputes:
// from the partition holding now-window to the one holding now. Older
// partitions are kept as the active build has them.
func windowKeys(by semantic.Grain, window time.Duration, now time.Time) []string {
	var keys []string
	end := partitionStart(by, now)
	for k := partitionStart(by, now.Add(-window)); !k.After(end); k = nextPartition(by, k) {
		keys = append(keys, k.Format(partitionKeyLayout))
	}
	return keys
}

// partitioned reports whether refreshes of p rebuild only a window.
func partitioned(p *semantic.PreAggregate) bool {
	return p.Refresh.PartitionBy != "" && p.Refresh.UpdateWindow > 0
}
