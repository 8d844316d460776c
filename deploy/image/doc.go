// Package image holds the test of the container image's build: no Docker
// engine runs in CI, so the test builds the binary with scripts/build.sh,
// as the Dockerfile does (it reads the Dockerfile to check that), in a copy
// of the build context (.dockerignore applied), and checks what the image
// relies on: the version, the roles, cgo with DuckDB, the libraries the
// runtime base provides.
package image
