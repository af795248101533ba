package loadgen

// WithBeforeAppend returns o with a hook called before every append attempt
// to a user's stream, so that a test can race the generator.
func WithBeforeAppend(o Options, hook func(userID string)) Options {
	o.beforeAppend = hook
	return o
}
