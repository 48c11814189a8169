package config

// fallbackWarnings names a must-change strategy that ends with the user
// merely signed out. A PATCH of forceChangePasswordNextSignIn alone has been
// reported to answer 204 and change nothing (microsoft-graph-docs#4267);
// the read-back catches it and takes actuator.cloud_managed.fallback. With
// "chain" and no pending group the chain is a revoke only: the user signs
// in again with the old password and is never asked for a new one.
func (c Config) fallbackWarnings(t Targets) []string {
	a := c.Actuator
	if !t.Actuator || a.CloudManaged.Fallback != "chain" || a.Synced.PendingGroupID != "" {
		return nil
	}
	return []string{"actuator.cloud_managed.fallback is chain but actuator.synced.pending_group_id is empty: " +
		"when Graph accepts the must-change flag and does not keep it (microsoft-graph-docs#4267), the user is only signed out " +
		"and signs in again with the old password, never asked to change it; set actuator.synced.pending_group_id " +
		"(a group Conditional Access blocks until the password changes), or actuator.cloud_managed.fallback: temporary_password"}
}
