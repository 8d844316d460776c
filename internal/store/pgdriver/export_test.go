package pgdriver

import "context"

// MigrateTo applies the embedded migrations up to and including version,
// so tests can build a database as an older release left it.
func MigrateTo(ctx context.Context, d *Driver, version int) error {
	migs, err := loadMigrations()
	if err != nil {
		return err
	}
	var upTo []migration
	for _, m := range migs {
		if m.version <= version {
			upTo = append(upTo, m)
		}
	}
	return d.migrate(ctx, upTo)
}
