package errkind

import "errors"

// ErrClaimNotYours is the kind shared by flow, query and builds for a worker
// that names the holder of a live claim (its worker id and attempt) with
// another worker token than the one that made the claim. The API answers
// 403 claim_not_yours; the holder keeps its claim.
var ErrClaimNotYours = errors.New("claimed with another worker token")
