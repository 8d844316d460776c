// Package monitoring holds the tests of Millrace's Grafana dashboard
// (deploy/grafana) and Prometheus alert rules (deploy/prometheus): promtool
// checks them, and a real Prometheus scraping `millrace dev` under load
// proves that every expression in them returns data.
package monitoring
