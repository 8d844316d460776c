package server

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/store"
)

// Schema is where a database's schema stands against this binary.
type Schema struct {
	Applied int // highest migration the database has
	Latest  int // highest migration this binary embeds
}

// ReadSchema reads the schema version of drv's database.
func ReadSchema(ctx context.Context, drv store.Driver) (Schema, error) {
	latest, err := drv.LatestMigration()
	if err != nil {
		return Schema{}, err
	}
	applied, err := drv.MigrationVersion(ctx)
	if err != nil {
		return Schema{}, err
	}
	return Schema{Applied: applied, Latest: latest}, nil
}

// openStore opens the server's event store. With MILLRACE_MIGRATE=true it
// applies pending migrations. With false (the Helm chart, whose hook Job
// runs `millrace migrate` before servers roll) it only checks the schema:
// a database behind this binary would fail queries at random later, so
// the server refuses to start; one ahead of it is an older binary during a
// rollback, which works because migrations only add (columns with
// defaults, tables, indexes), so the server warns and serves.
func openStore(ctx context.Context, cfg config.Server, log *slog.Logger) (store.Driver, error) {
	if cfg.Migrate {
		return OpenDriver(ctx, cfg.DatabaseURL)
	}
	drv, err := Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	sc, err := ReadSchema(ctx, drv)
	if err != nil {
		drv.Close()
		return nil, fmt.Errorf("read the schema version (MILLRACE_MIGRATE=false): %w", err)
	}
	switch {
	case sc.Applied < sc.Latest:
		drv.Close()
		return nil, fmt.Errorf("the database schema is at migration %d and this server needs %d: "+
			"run `millrace migrate` with the same DATABASE_URL first (the Helm chart's pre-install/pre-upgrade hook Job does: "+
			"see why it did not with kubectl logs job/<fullname>-migrate), or start the server with MILLRACE_MIGRATE=true", sc.Applied, sc.Latest)
	case sc.Applied > sc.Latest:
		log.Warn("the database schema is newer than this server (a rollback?); serving anyway, since migrations only add; roll forward when you can",
			"schema", sc.Applied, "server_schema", sc.Latest)
	}
	return drv, nil
}
