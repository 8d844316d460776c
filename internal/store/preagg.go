package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/api"
)

// SemanticModel is one model of a project's metrics layer, as declared
// (in MILLRACE_PROJECTS_FILE or through the API).
type SemanticModel struct {
	ProjectID  int64
	Name       string
	Definition json.RawMessage // canonical JSON of semantic.Model
	Hash       string          // of Definition: a pre-aggregate's builds are valid only for its hash
	Source     string          // "file.yaml:12" or "api"
	UpdatedAt  time.Time
}

// PreAggBuild is one build (materialization) of a pre-aggregate. At most
// one build per (project, model, pre-aggregate) is active.
type PreAggBuild struct {
	BuildUUID    string
	ProjectID    int64
	Model        string
	PreAggregate string
	DefHash      string // the pre-aggregate definition's hash the build was made for
	Status       api.BuildStatus
	Trigger      string          // manual | cron | key_sql | definition | missing | partition
	Partitions   json.RawMessage // []api.PartitionObject: the whole build once complete (kept ones included)
	Rebuild      json.RawMessage // []string: partition keys to recompute; null: all
	Rows         int64
	Bytes        int64
	KeyValue     string // refresh.key_sql's result when the build started
	DataAsOf     *time.Time
	Error        string
	WorkerID     string
	Publishes    int
	PublishedAt  *time.Time // last notification; doubles as the last heartbeat while building
	CreatedAt    time.Time
	StartedAt    *time.Time
	EndedAt      *time.Time
	UpdatedAt    time.Time
	// ClaimTokenID is the id of the worker token whose claim made the
	// build building (0: no token, auth off or built in the server); only
	// that token may heartbeat, complete or fail it.
	ClaimTokenID int64
}

// BuildUpdate lists the fields a build transition may set; nil fields are
// left unchanged.
type BuildUpdate struct {
	Partitions  json.RawMessage
	Rows        *int64
	Bytes       *int64
	KeyValue    *string
	DataAsOf    *time.Time
	Error       *string
	WorkerID    *string
	PublishedAt *time.Time
	StartedAt   *time.Time
	EndedAt     *time.Time
	// ClaimTokenID is set by a claim (see PreAggBuild.ClaimTokenID).
	ClaimTokenID *int64
}

// PreAggState is the refresh bookkeeping of one pre-aggregate, written
// with compare-and-set on Version so that several servers agree on which
// of them triggers a build.
type PreAggState struct {
	ProjectID    int64
	Model        string
	PreAggregate string
	Version      int64      // 0 when the row does not exist yet
	NextCronAt   *time.Time // the next cron firing
	KeyValue     string     // refresh.key_sql's last seen result
	KeyCheckedAt *time.Time
	UpdatedAt    time.Time
}

// PreAggQuerier holds the read operations of the metrics layer and its
// pre-aggregates.
type PreAggQuerier interface {
	ModelGet(ctx context.Context, projectID int64, name string) (SemanticModel, error)
	ModelList(ctx context.Context, projectID int64) ([]SemanticModel, error) // by name
	BuildGet(ctx context.Context, uuid string) (BuildRow, error)
	// BuildList pages a project's builds newest first (created_at desc);
	// model and preAgg filter when non-empty.
	BuildList(ctx context.Context, projectID int64, model, preAgg string, offset, limit int) ([]PreAggBuild, error)
	// BuildsActive returns the project's active builds.
	BuildsActive(ctx context.Context, projectID int64) ([]PreAggBuild, error)
	// BuildsQueuedBefore returns up to limit queued builds whose
	// PublishedAt <= before (notification presumed lost), oldest first.
	BuildsQueuedBefore(ctx context.Context, before time.Time, limit int) ([]PreAggBuild, error)
	// BuildsBuildingBefore returns up to limit building builds whose
	// PublishedAt (last heartbeat) <= before: their worker died.
	BuildsBuildingBefore(ctx context.Context, before time.Time, limit int) ([]PreAggBuild, error)
	// BuildPending reports whether the pre-aggregate has a queued or
	// building build (so a trigger does not pile up duplicates).
	BuildPending(ctx context.Context, projectID int64, model, preAgg string) (bool, error)
	PreAggStateGet(ctx context.Context, projectID int64, model, preAgg string) (PreAggState, error) // ErrNotFound if absent
}

// BuildRow is a build as read back (an alias, so the interface reads well).
type BuildRow = PreAggBuild

// PreAggTx holds the write operations of the metrics layer.
type PreAggTx interface {
	// ModelPut inserts or replaces a model by (project, name).
	ModelPut(ctx context.Context, m SemanticModel) error
	// ModelDelete removes a model; ErrNotFound if absent.
	ModelDelete(ctx context.Context, projectID int64, name string) error
	BuildInsert(ctx context.Context, b PreAggBuild) error
	// BuildTransition moves a build to status `to` and applies upd, only
	// if its current status is one of from; ErrConflict otherwise (the
	// returned build then holds the current row), ErrNotFound if absent.
	// `to` may not be active: only BuildPromote makes a build active.
	// UpdatedAt becomes now.
	BuildTransition(ctx context.Context, uuid string, from []api.BuildStatus, to api.BuildStatus, upd BuildUpdate, now time.Time) (PreAggBuild, error)
	// BuildPromote makes a building build active and the pre-aggregate's
	// previous active build superseded, atomically. If the active build
	// was created after this one (a late-finishing older build), this one
	// becomes superseded instead and ErrConflict is returned: an older
	// build never replaces a newer one. That outcome is written: commit it
	// (the returned row shows it) rather than roll it back, or the build
	// stays building until the reaper re-queues it. "After" is by
	// (CreatedAt, BuildUUID). A build that is not building is ErrConflict
	// with its row and nothing changes; ErrNotFound if absent. upd applies
	// to this build either way; UpdatedAt becomes now on every row changed.
	BuildPromote(ctx context.Context, uuid string, upd BuildUpdate, now time.Time) (PreAggBuild, error)
	// BuildMarkRepublished increments Publishes and sets PublishedAt = now
	// (also a building build's heartbeat); ErrNotFound if absent.
	BuildMarkRepublished(ctx context.Context, uuid string, now time.Time) (PreAggBuild, error)
	// PreAggStateCAS writes st if the stored Version is prevVersion (0:
	// the row must not exist) and sets st.Version = prevVersion+1;
	// ErrConflict when another writer got there first.
	PreAggStateCAS(ctx context.Context, st PreAggState, prevVersion int64) error
}

// buildStatuses are the statuses a driver accepts.
var buildStatuses = map[api.BuildStatus]bool{
	api.BuildQueued: true, api.BuildBuilding: true, api.BuildActive: true,
	api.BuildSuperseded: true, api.BuildFailed: true,
}

// ValidBuildStatus reports whether s is a known build status.
func ValidBuildStatus(s api.BuildStatus) bool { return buildStatuses[s] }

// CheckBuildTransition rejects, before a driver runs it, a transition that
// would strand a build (an unknown status) or bypass BuildPromote (to
// active).
func CheckBuildTransition(from []api.BuildStatus, to api.BuildStatus) error {
	if len(from) == 0 {
		return errors.New("no expected build status given")
	}
	for _, s := range from {
		if !ValidBuildStatus(s) {
			return fmt.Errorf("unknown expected build status %q", s)
		}
	}
	if !ValidBuildStatus(to) {
		return fmt.Errorf("unknown build status %q", to)
	}
	if to == api.BuildActive {
		return errors.New("a build becomes active only through BuildPromote, which supersedes the previous active build")
	}
	return nil
}
