package preagg

import (
	"sort"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/semantic"
)

// PartitionKeyLayout formats a partition's key: its start date.
const PartitionKeyLayout = "2006-01-02"

// PartitionKey is the key of the partition at grain g holding t.
func PartitionKey(t time.Time, g semantic.Grain) string {
	return Truncate(t, g).Format(PartitionKeyLayout)
}

// WindowStart is where a partial refresh of p starts at now: the start of
// the partition holding now - refresh.update_window, so the window covers
// whole partitions. ok is false when p is not partitioned or has no
// update_window (every refresh is a full build).
func WindowStart(p *semantic.PreAggregate, now time.Time) (time.Time, bool) {
	pb, w := p.Refresh.PartitionBy, time.Duration(p.Refresh.UpdateWindow)
	if pb == "" || w <= 0 {
		return time.Time{}, false
	}
	return Truncate(now.Add(-w), pb), true
}

// WindowKeys lists the keys of the partitions from start up to the one
// holding now, oldest first: what a partial refresh rebuilds.
func WindowKeys(p *semantic.PreAggregate, start, now time.Time) []string {
	pb := p.Refresh.PartitionBy
	var keys []string
	for t := Truncate(start, pb); !t.After(now); t = nextPartition(t, pb) {
		keys = append(keys, t.Format(PartitionKeyLayout))
	}
	return keys
}

func nextPartition(t time.Time, g semantic.Grain) time.Time {
	switch g {
	case semantic.GrainHour:
		return t.Add(time.Hour)
	case semantic.GrainDay:
		return t.AddDate(0, 0, 1)
	case semantic.GrainWeek:
		return t.AddDate(0, 0, 7)
	case semantic.GrainMonth:
		return t.AddDate(0, 1, 0)
	case semantic.GrainQuarter:
		return t.AddDate(0, 3, 0)
	}
	return t.AddDate(1, 0, 0)
}

// Keep lists the active build's partitions a partial refresh starting at
// start keeps as they are (those before it), sorted by key. ok is false
// when the active build cannot be split so (an object without a partition
// key): the refresh must then be a full build, or the kept rows would be
// lost.
func Keep(active []api.PartitionObject, start time.Time) (kept []api.PartitionObject, ok bool) {
	from := start.UTC().Format(PartitionKeyLayout)
	for _, o := range active {
		if _, err := time.Parse(PartitionKeyLayout, o.Key); err != nil {
			return nil, false
		}
		if o.Key < from {
			kept = append(kept, o)
		}
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].Key < kept[j].Key })
	return kept, true
}
