// Command millrace is the single Millrace binary: server, worker, dev mode
// and the client commands.
package main

import (
	"os"

	"github.com/millrace/millrace/internal/cli"
)

func main() {
	os.Exit(cli.Execute())
}
