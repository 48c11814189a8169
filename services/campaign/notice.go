package campaign

import (
	"context"
	"fmt"

	"github.com/pwsync/pwsync/shared/events"
)

// sendNotice publishes the password_reset notice; the message ID makes a
// republish after a restart a duplicate JetStream drops, and the
// notifier's ledger (keyed by the campaign's start) sends it once.
func (g *graphLane) sendNotice(ctx context.Context, it *item) {
	if g.excluded(ctx, it) {
		return
	}
	t := g.targets[it.idx]
	a := events.Action{
		ID:        events.KeySafe(fmt.Sprintf("campaign.%s.%d.notify", g.c.ID, t.Idx)),
		Kind:      events.ActionNotify,
		Rule:      "campaign",
		Reason:    g.c.Spec.Name,
		EventID:   "campaign." + g.c.ID,
		EventTime: g.now().UTC(),
		User:      events.UserRef{UPN: t.UPN, CloudID: t.CloudID, ObjectGUID: t.ObjectGUID, DN: t.DN},
		Notice: &events.Notice{Template: events.NoticePasswordReset, PasswordSetAt: g.c.StartedAt,
			Language: t.Lang, DisplayName: t.Name},
		Campaign: g.c.ID,
	}
	it.attempts++
	if _, err := g.pub.PublishJSON(ctx, a.Subject(), a.ID, a); err != nil {
		if it.attempts >= g.cfg.MaxAttempts {
			g.record(ctx, it, StepResult{Status: StatusFailed, At: g.now().UTC(), Detail: err.Error()})
			return
		}
		it.notBefore = g.now().Add(g.cfg.backoff(it.attempts))
		g.enqueue(it, false)
		return
	}
	g.record(ctx, it, StepResult{Status: StatusDone, At: g.now().UTC(), Detail: "published " + a.ID})
}
