package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Notification outcomes (the notifier's sends, by channel).
const (
	NotifySent     = "sent"
	NotifyDeferred = "deferred" // quiet hours, or no send slot within the wait budget: it comes back later
	NotifyFailed   = "failed"   // refused or lost; retried or dead-lettered
)

// The pacing wait is zero while under the limits and up to the notifier's
// wait budget (60 s) when a mailbox's 30-a-minute window is full.
var pacingBuckets = []float64{.001, .01, .05, .1, .25, .5, 1, 2, 5, 10, 20, 30, 60}

var (
	// Notifications counts the notifier's sends by channel (email, teams,
	// webhook) and outcome (sent, deferred, failed).
	Notifications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pwsync_notifications_total", Help: "Notices and alerts by channel (email, teams, webhook) and outcome (sent, deferred, failed)."},
		[]string{"channel", "outcome"})
	// NotifyPacingWait is how long a send waited for a slot under the
	// channel's limits (Exchange Online 30/min per mailbox, Teams 5/s).
	NotifyPacingWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "pwsync_notify_pacing_wait_seconds", Help: "Time a send waited for a slot under the channel's limits, by channel.",
		Buckets: pacingBuckets}, []string{"channel"})
)

func init() { Registry.MustRegister(Notifications, NotifyPacingWait) }

// Notification records one send outcome on a channel.
func Notification(channel, outcome string) { Notifications.WithLabelValues(channel, outcome).Inc() }

// PacingWait records a wait for a send slot.
func PacingWait(channel string, d time.Duration) {
	NotifyPacingWait.WithLabelValues(channel).Observe(d.Seconds())
}
