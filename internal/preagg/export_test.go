package preagg

import "github.com/millrace/millrace/internal/semantic"

// RewriteUnchecked is Rewrite without Match's checks: the differential
// test runs it where Match says no, to show the answer would be wrong.
func RewriteUnchecked(r *semantic.Resolved, p *semantic.PreAggregate) (string, error) {
	return rewrite(r, p, analyze(r, p))
}
