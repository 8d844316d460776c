// Package ui is Millrace's web UI: static pages and scripts embedded in the
// binary (no build step), served under /ui/ by the server and the gateway.
package ui
