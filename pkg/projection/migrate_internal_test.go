package projection

import "testing"

// TestCheckServerVersion: servers older than 13 are refused with their
// version named; 13 and later pass. (Only PostgreSQL 15 runs here: the
// refusal is checked on the version number the server would report.)
func TestCheckServerVersion(t *testing.T) {
	for _, tc := range []struct {
		num  int
		want string
	}{
		{90624, "PostgreSQL 9.6 is too old: projectionist needs PostgreSQL 13 or later (for xid8 and pg_current_xact_id)"},
		{120005, "PostgreSQL 12.5 is too old: projectionist needs PostgreSQL 13 or later (for xid8 and pg_current_xact_id)"},
		{130000, ""},
		{150018, ""},
		{180001, ""},
	} {
		err := checkServerVersion(tc.num)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("checkServerVersion(%d) = %q, want %q", tc.num, got, tc.want)
		}
	}
}
