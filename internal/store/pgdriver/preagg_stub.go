package pgdriver

// Stubs until the pre-aggregate tables land (issue 11, store slice): every
// operation refuses with errPreAggTODO.

import (
	"context"
	"errors"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

var errPreAggTODO = errors.New("pre-aggregate store operations are not implemented yet")

func (querier) ModelGet(context.Context, int64, string) (store.SemanticModel, error) {
	return store.SemanticModel{}, errPreAggTODO
}
func (querier) ModelList(context.Context, int64) ([]store.SemanticModel, error) {
	return nil, errPreAggTODO
}
func (querier) BuildGet(context.Context, string) (store.BuildRow, error) {
	return store.BuildRow{}, errPreAggTODO
}
func (querier) BuildList(context.Context, int64, string, string, int, int) ([]store.PreAggBuild, error) {
	return nil, errPreAggTODO
}
func (querier) BuildsActive(context.Context, int64) ([]store.PreAggBuild, error) {
	return nil, errPreAggTODO
}
func (querier) BuildsQueuedBefore(context.Context, time.Time, int) ([]store.PreAggBuild, error) {
	return nil, errPreAggTODO
}
func (querier) BuildsBuildingBefore(context.Context, time.Time, int) ([]store.PreAggBuild, error) {
	return nil, errPreAggTODO
}
func (querier) BuildPending(context.Context, int64, string, string) (bool, error) {
	return false, errPreAggTODO
}
func (querier) PreAggStateGet(context.Context, int64, string, string) (store.PreAggState, error) {
	return store.PreAggState{}, errPreAggTODO
}
func (*tx) ModelPut(context.Context, store.SemanticModel) error  { return errPreAggTODO }
func (*tx) ModelDelete(context.Context, int64, string) error     { return errPreAggTODO }
func (*tx) BuildInsert(context.Context, store.PreAggBuild) error { return errPreAggTODO }
func (*tx) BuildTransition(context.Context, string, []api.BuildStatus, api.BuildStatus, store.BuildUpdate, time.Time) (store.PreAggBuild, error) {
	return store.PreAggBuild{}, errPreAggTODO
}
func (*tx) BuildPromote(context.Context, string, store.BuildUpdate, time.Time) (store.PreAggBuild, error) {
	return store.PreAggBuild{}, errPreAggTODO
}
func (*tx) BuildMarkRepublished(context.Context, string, time.Time) (store.PreAggBuild, error) {
	return store.PreAggBuild{}, errPreAggTODO
}
func (*tx) PreAggStateCAS(context.Context, store.PreAggState, int64) error { return errPreAggTODO }
