// Package wire converts store rows to their api form. Rows leave a server
// process only through here (the HTTP API, and the local runtime's output),
// so a column can change without changing what clients see.
package wire

import (
	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// CatalogEntry converts a catalog row.
func CatalogEntry(e store.CatalogEntry) api.CatalogEntry {
	return api.CatalogEntry{CatalogID: e.CatalogID, Path: e.Path, Version: e.Version, Name: e.Name, Content: e.Content, CreatedAt: e.CreatedAt}
}

// Execution converts an execution row. Its workload, catalog id and
// revision stay inside.
func Execution(e store.Execution) api.Execution {
	return api.Execution{ExecutionID: e.ExecutionID, Path: e.Path, Version: e.Version, Status: e.Status, StartedAt: e.StartedAt,
		EndedAt: e.EndedAt, Result: e.Result, Error: e.Error, ParentExecutionID: e.ParentExecutionID, Context: e.Context}
}

// Event converts an event row.
func Event(e store.Event) api.Event {
	return api.Event{EventID: e.EventID, ExecutionID: e.ExecutionID, EventType: e.EventType, Step: e.Step, CommandID: e.CommandID,
		Status: e.Status, Result: e.Result, Error: e.Error, WorkerID: e.WorkerID, Attempt: e.Attempt, CreatedAt: e.CreatedAt}
}

// Events converts a list of event rows; never nil.
func Events(evs []store.Event) []api.Event {
	out := make([]api.Event, len(evs))
	for i, e := range evs {
		out[i] = Event(e)
	}
	return out
}

// Command converts a command row.
func Command(c store.Command) api.Command {
	return api.Command{EventID: c.EventID, ExecutionID: c.ExecutionID, CommandID: c.CommandID, Step: c.Step, Tool: c.Tool, Input: c.Input,
		Status: c.Status, Attempt: c.Attempt, WorkerID: c.WorkerID, LeaseExpires: c.LeaseExpires, Result: c.Result, Error: c.Error,
		Publishes: c.Publishes, PublishedAt: c.PublishedAt, AvailableAt: c.AvailableAt, LoopID: c.LoopID, LoopIndex: c.LoopIndex,
		Retry: c.Retry, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt, Pool: c.Pool}
}

// Stats converts the store's summary.
func Stats(s store.Stats) api.Stats {
	return api.Stats{ExecutionsRunning: s.ExecutionsRunning, CommandsPending: s.CommandsPending, OutboxDepth: s.OutboxDepth}
}

// Credential converts a credential row to its metadata; the sealed data
// never leaves.
func Credential(c store.Credential) api.Credential {
	return api.Credential{Name: c.Name, Kind: c.Kind, Description: c.Description, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}

// Project converts a project row; the sealed connection never leaves.
func Project(p store.Project) api.Project {
	return api.Project{ProjectID: p.ProjectID, Name: p.Name, WarehouseType: p.WarehouseType, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}
}

// Query converts a query-history row.
func Query(q store.Query) api.QueryRecord {
	return api.QueryRecord{QueryUUID: q.QueryUUID, ProjectID: q.ProjectID, SQL: q.SQL, Lane: q.Lane, CacheKey: q.CacheKey, CacheHit: q.CacheHit,
		Status: q.Status, Error: q.Error, Columns: q.Columns, TotalRows: q.TotalRows, ResultKey: q.ResultKey, WorkerID: q.WorkerID,
		Publishes: q.Publishes, PublishedAt: q.PublishedAt, CreatedAt: q.CreatedAt, StartedAt: q.StartedAt, EndedAt: q.EndedAt,
		ExpiresAt: q.ExpiresAt, UpdatedAt: q.UpdatedAt}
}

// QueueStats converts the query queue's summary.
func QueueStats(s store.QueueStats) api.QueueStats {
	return api.QueueStats{Queued: s.Queued, OldestQueued: s.OldestQueued, Executing: s.Executing}
}
