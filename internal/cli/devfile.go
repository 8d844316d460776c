package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/millrace/millrace/internal/config"
)

// devFileName is the file `millrace dev` keeps in its data directory while
// it runs. Client commands on the same machine read it when no server or
// NATS URL is given, so `millrace dev` in one terminal and
// `millrace nats stream info` in another just work, whatever ports dev got.
const devFileName = "dev.json"

// devInstance is the content of DATA_DIR/dev.json.
type devInstance struct {
	APIURL  string    `json:"api_url"`
	NATSURL string    `json:"nats_url"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	// TokenFile holds dev's admin token; client commands that talk to this
	// instance send it unless given a token of their own.
	TokenFile string `json:"token_file,omitempty"`
}

// announceDev writes DATA_DIR/dev.json and returns the function that
// removes it again (only while it is still this process's: a newer dev
// instance on the same directory keeps its own), and leaves the file of
// another live instance alone. Failing to write it costs
// only the discovery, so it is logged, not returned.
func announceDev(log *slog.Logger, dataDir, apiURL, natsURL, tokenFile string) (remove func()) {
	path := filepath.Join(dataDir, devFileName)
	if d, err := readDevFile(path); err == nil && d.PID != os.Getpid() && alive(d.PID) {
		log.Warn("another millrace dev runs on this data directory; client commands keep finding that one", "path", path, "pid", d.PID)
		return func() {}
	}
	b, _ := json.MarshalIndent(devInstance{APIURL: apiURL, NATSURL: natsURL, PID: os.Getpid(), Started: time.Now().UTC(), TokenFile: tokenFile}, "", "  ")
	tmp := path + ".tmp"
	// 0600: NATS_URL may carry credentials.
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		log.Warn("cannot record this dev instance for client commands", "path", path, "err", err)
		return func() {}
	}
	if err := os.Rename(tmp, path); err != nil {
		log.Warn("cannot record this dev instance for client commands", "path", path, "err", err)
		return func() {}
	}
	return func() {
		if d, err := readDevFile(path); err == nil && d.PID == os.Getpid() {
			_ = os.Remove(path)
		}
	}
}

// devDataDir is where client commands look for dev.json: MILLRACE_DATA_DIR,
// else dev mode's default, relative to the working directory.
func devDataDir() string {
	if d := os.Getenv("MILLRACE_DATA_DIR"); d != "" {
		return d
	}
	return config.DefaultDevDataDir
}

// findDev returns the running dev instance recorded under devDataDir, if
// there is one whose process is still alive.
func findDev() (devInstance, bool) {
	d, err := readDevFile(filepath.Join(devDataDir(), devFileName))
	if err != nil || !alive(d.PID) {
		return devInstance{}, false
	}
	return d, true
}

func readDevFile(path string) (devInstance, error) {
	var d devInstance
	b, err := os.ReadFile(path)
	if err != nil {
		return d, err
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("%s: %w", path, err)
	}
	if d.PID <= 0 {
		return d, errors.New(path + ": no pid")
	}
	return d, nil
}

// alive reports whether a process with this pid exists (signal 0 checks
// without sending anything). A dev instance that was killed leaves its
// file behind; this keeps clients from following it.
func alive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	err = p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, syscall.EPERM)
}

// devToken is the admin token of dev instance d for a command talking to
// server, or "" when server is not that instance (a token is never sent to
// a server it was not made for).
func devToken(d devInstance, server string) string {
	if strings.TrimRight(d.APIURL, "/") != strings.TrimRight(server, "/") {
		return ""
	}
	return readSecret(d.TokenFile)
}
