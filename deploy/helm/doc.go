// Package helm holds the tests of the Helm chart in deploy/helm/millrace:
// they render it with Helm's Go SDK under several value sets, decode every
// manifest strictly into its Kubernetes API type and check the chart's
// invariants, lint and values schema. The package has no code of its own.
package helm
