package controllers_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// Secrets whose connection string is malformed or names an unreachable
// server, in the shapes of issue 12: the Degraded condition, the events
// and the operator's log never show the password.
func TestSecretPasswordNeverShown(t *testing.T) {
	const secret = "S3cr3tPw9"
	ns := newNamespace(t)
	for i, tc := range []struct{ dsn, reason string }{
		{"postgres://app:" + secret + " x@127.0.0.1:30373/app", v1alpha1.ReasonInvalidDSN},
		{"postgres://app:x " + secret + "@127.0.0.1:30373/app", v1alpha1.ReasonInvalidDSN},
		{"postgres://app:" + secret + "@127.0.0.1:notaport/app", v1alpha1.ReasonInvalidDSN},
		{"postgres://app:" + secret + "%zz@127.0.0.1/app", v1alpha1.ReasonInvalidDSN},
		{"host=127.0.0.1 user=app password='x " + secret + "' port=notaport", v1alpha1.ReasonInvalidDSN},
		{`host=127.0.0.1 user=app password='x\' ` + secret + `' port=notaport`, v1alpha1.ReasonInvalidDSN},
		{"host=127.0.0.1 user=app password='x " + secret, v1alpha1.ReasonInvalidDSN},
		{"host=127.0.0.1 user=app password=x " + secret + " dbname=app", v1alpha1.ReasonInvalidDSN},
		{"postgres://app:" + url.PathEscape(secret+" x") + "@127.0.0.1:1/app?sslmode=disable", v1alpha1.ReasonDatabaseUnreachable},
		{"host=127.0.0.1 port=1 user=app password='x " + secret + "' sslmode=disable", v1alpha1.ReasonDatabaseUnreachable},
	} {
		name := fmt.Sprintf("db-%d", i)
		newSecret(t, ns, name, map[string]string{"dsn": tc.dsn})
		projectionOn(t, ns, fmt.Sprintf("p-%d", i), name, 1)
		eventually(t, 60*time.Second, fmt.Sprintf("p-%d Degraded %s", i, tc.reason), func() error {
			got := condition(getProjection(t, ns, fmt.Sprintf("p-%d", i)), v1alpha1.ConditionDegraded)
			if strings.Contains(got, secret) {
				t.Fatalf("the condition shows the password of %q: %q", tc.dsn, got)
			}
			if !strings.HasPrefix(got, "True/"+tc.reason+": ") {
				return fmt.Errorf("Degraded is %q", got)
			}
			return nil
		})
	}
	for _, e := range listEvents(t, ns) {
		if strings.Contains(e.Message, secret) {
			t.Errorf("event %s shows the password: %q", e.Reason, e.Message)
		}
	}
	for line := range strings.Lines(operatorLog.String()) {
		if strings.Contains(line, secret) {
			t.Errorf("the operator log shows the password: %s", line)
		}
	}
}
