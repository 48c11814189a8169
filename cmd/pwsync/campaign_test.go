package main

import (
	"testing"

	"github.com/pwsync/pwsync/services/campaign"
)

func TestProgressLine(t *testing.T) {
	tests := []struct {
		st   campaign.Stats
		want string
	}{
		{campaign.Stats{Total: 100, Done: 40, Failed: 5, Remaining: 55, Rate: 11},
			"[#############.................]  45.0% done 40 failed 5 remaining 55 | 11.0 users/s | ETA 5s | running"},
		{campaign.Stats{Total: 0}, "[..............................]   0.0% done 0 failed 0 remaining 0 | 0.0 users/s | ETA - | running"},
		{campaign.Stats{Total: 3, Done: 3}, "[##############################] 100.0% done 3 failed 0 remaining 0 | 0.0 users/s | ETA - | running"},
	}
	for _, tc := range tests {
		got := progressLine(campaign.Status{Campaign: campaign.Campaign{State: campaign.StateRunning}, Stats: tc.st}, 30)
		if got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}
