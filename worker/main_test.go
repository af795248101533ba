package worker

import (
	"testing"

	"github.com/projectionist/projectionist/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
