package bus

import "encoding/json"

// CatalogSubject is where a server tells the others, on core NATS, that it
// registered a playbook version, so they stop running the previous latest
// from their catalog cache. Best effort: a word lost is covered by the
// cache's TTL (MILLRACE_CATALOG_CACHE_SECONDS).
const CatalogSubject = "millrace.catalog.registered"

// CatalogRegistered is the word of one register.
type CatalogRegistered struct {
	Path      string `json:"path"`
	CatalogID int64  `json:"catalog_id"`
	Version   int    `json:"version"`
}

// PublishCatalogRegistered sends the word of a register. It does not wait
// for the server: a lost word costs at most the cache's TTL of staleness.
func (c *Conn) PublishCatalogRegistered(m CatalogRegistered) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return c.NC.Publish(CatalogSubject, b)
}
