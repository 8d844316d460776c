package auth

import (
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/config"
)

// What a request pays for authentication: a cached token (every request
// after the first within MILLRACE_AUTH_CACHE_SECONDS), and a lookup in the
// store (the first, or every one with the cache off).
func BenchmarkAuthenticate(b *testing.B) {
	for _, c := range []struct {
		name string
		ttl  time.Duration
	}{{"cached", time.Hour}, {"store", 0}} {
		b.Run(c.name, func(b *testing.B) {
			a, _, _ := newTestAuth(b, func(cfg *config.Auth) { cfg.CacheTTL = c.ttl })
			tok, err := a.CreateToken(b.Context(), api.RoleWorker, "bench", "bench", nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := a.Authenticate(b.Context(), tok.Secret); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
