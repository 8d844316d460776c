//go:build race

package e2e

// raceEnabled: the test binary runs under -race, so the millrace binary the
// tests start is built with it too and its races fail the test.
const raceEnabled = true
