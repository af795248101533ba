package dbconn_test

import (
	"testing"

	"github.com/projectionist/projectionist/internal/pgtest"
)

// TestMain stops the PostgreSQL server pgtest starts for these tests.
func TestMain(m *testing.M) { pgtest.Main(m) }
