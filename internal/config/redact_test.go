package config

import "testing"

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://app:hunter2@db:5432/m?sslmode=disable": "postgres://app:***@db:5432/m?sslmode=disable",
		"postgresql://app:p%40ss@db/m":                     "postgresql://app:***@db/m",
		"postgres://app@db/m":                              "postgres://app@db/m",
		"postgres://db/m?user=app&password=hunter2":        "postgres://db/m?password=***&user=app",
		"host=db user=app password=hunter2 dbname=m":       "host=db user=app password=*** dbname=m",
		"host=db password='hun ter2' sslpassword=k3y":      "host=db password=*** sslpassword=***",
		"sqlite:/var/lib/millrace/millrace.db":             "sqlite:/var/lib/millrace/millrace.db",
		"sqlite::memory:":                                  "sqlite::memory:",
		"":                                                 "",
		"http://collector:4318":                            "http://collector:4318",
		"mysql://root:hunter2@db/m":                        "mysql://root:***@db/m",
		"postgres://app:hun%zzter2@db/m":                   "postgres://***@db/m",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
