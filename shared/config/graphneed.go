package config

// NeedsGraph reports whether the targets call Graph: the actuator, the
// webhook's subscriptions and delta, and the evaluator when Entra groups
// bring users into scope (their transitive members are read).
func (c Config) NeedsGraph(t Targets) bool {
	return t.Actuator || (t.Ingest && (c.Webhook.Enabled || c.Risk.Enabled)) || (t.Evaluator && len(c.Evaluator.Scope.IncludeEntraGroups) > 0)
}
