// Package bench holds the operator's scale benchmark: the real operator
// binary against an API server (envtest) and a real PostgreSQL. It has no
// tests; a plain `go test ./...` starts nothing here. Run it with
//
//	make bench-operator
//
// See operator_bench_test.go for what is measured.
package bench
