package commands

import (
	"sync"

	"github.com/millrace/millrace/internal/api"
)

// childKey hands out the key of each child a command's run starts, so a
// re-run of the command finds the children of the first run (the server's
// unique key on the parent command and task). A single tool's child is
// key 0, as the server keys a `playbook` step it runs itself; a task
// list's children are numbered 1, 2, … in the order the run starts them,
// which a re-run repeats. A cursor loop's rows differ from run to run:
// its children are not keyed.
type childKey struct {
	mu     sync.Mutex
	tasks  bool
	cursor bool
	n      int
}

// set reads what kind of run the payload makes.
func (k *childKey) set(p api.Payload) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.tasks, k.cursor, k.n = len(p.Tasks) > 0, p.Cursor != nil, 0
}

// next is the key of the run's next child; ok false: leave it unkeyed.
func (k *childKey) next() (int, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cursor {
		return 0, false
	}
	if !k.tasks {
		return 0, true
	}
	k.n++
	return k.n, true
}
