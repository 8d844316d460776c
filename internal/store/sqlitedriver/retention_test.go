package sqlitedriver

import (
	"testing"

	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/storetest"
)

func TestRetention(t *testing.T) {
	t.Parallel()
	storetest.Retention(t, func(t *testing.T) store.Driver { return setup(t).drv })
}
