// Package e2e holds Ganglion's end-to-end tests: they build the ganglion binary, start it
// as real OS processes (one process, or gateways, persisters and a sync worker on one
// NATS server) against real Postgres, NATS and Redis, and drive them with a real Matrix
// client library. Everything lives in _test.go files; this file only names the package.
package e2e
