// Package simtest runs the notifier against the Graph simulator through
// the real msgraph client and a real NATS: pacing under the mailbox and
// Teams limits (the simulator counts every violation), the Teams-to-email
// fallback, two replicas, and the throughput benchmark. It is its own
// package because linking msgraph-sdk-go is slow: the notifier's unit
// tests stay fast.
package simtest
