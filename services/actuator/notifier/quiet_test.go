package notifier

import (
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/config"
)

func TestQuietHours(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	ny, _ := time.LoadLocation("America/New_York")
	set := config.Default().Notify
	set.DefaultTimeZone = "Europe/Paris"
	set.TimeZones = map[string]string{"ann@contoso.com": "America/New_York", "@contoso.jp": "Asia/Tokyo"}
	set.QuietHours = config.QuietHours{Start: "20:00", End: "08:00"}
	k, err := newClock(set)
	if err != nil {
		t.Fatal(err)
	}
	at := func(loc *time.Location, y int, m time.Month, d, h, min int) time.Time {
		return time.Date(y, m, d, h, min, 0, 0, loc)
	}
	tests := []struct {
		name string
		upn  string
		now  time.Time
		want time.Duration
	}{
		{"day_time", "bob@contoso.com", at(paris, 2026, 3, 10, 12, 0), 0},
		{"just_before", "bob@contoso.com", at(paris, 2026, 3, 10, 19, 59), 0},
		{"start", "bob@contoso.com", at(paris, 2026, 3, 10, 20, 0), 12 * time.Hour},
		{"late_evening", "bob@contoso.com", at(paris, 2026, 3, 10, 23, 30), 8*time.Hour + 30*time.Minute},
		{"after_midnight", "bob@contoso.com", at(paris, 2026, 3, 11, 7, 59), time.Minute},
		{"end_is_not_quiet", "bob@contoso.com", at(paris, 2026, 3, 11, 8, 0), 0},
		// Noon in Paris is 07:00 in New York (already on summer time on
		// 10 March, Paris not yet): quiet for Ann until 08:00 there.
		{"per_user_zone", "Ann@Contoso.com", at(paris, 2026, 3, 10, 12, 0), time.Hour},
		{"per_user_zone_day", "ann@contoso.com", at(ny, 2026, 3, 10, 12, 0), 0},
		// 12:00 UTC is 21:00 in Tokyo (domain mapping).
		{"per_domain_zone", "ken@contoso.jp", at(time.UTC, 2026, 3, 10, 12, 0), 11 * time.Hour},
		// DST starts in Paris on 2026-03-29 at 02:00: the night is an hour shorter.
		{"dst_night", "bob@contoso.com", at(paris, 2026, 3, 28, 22, 0), 9 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := k.quietFor(tt.now, k.zone(tt.upn))
			if got != tt.want {
				t.Fatalf("quietFor = %s, want %s", got, tt.want)
			}
			if got > 0 {
				end := tt.now.Add(got).In(k.zone(tt.upn))
				if end.Hour() != 8 || end.Minute() != 0 {
					t.Fatalf("deferred to %s, want 08:00 local", end)
				}
			}
		})
	}

	// Quiet hours within one day, and none at all.
	set.QuietHours = config.QuietHours{Start: "12:00", End: "14:00"}
	k, _ = newClock(set)
	if got := k.quietFor(at(paris, 2026, 3, 10, 13, 0), paris); got != time.Hour {
		t.Fatalf("midday quiet: %s", got)
	}
	if got := k.quietFor(at(paris, 2026, 3, 10, 21, 0), paris); got != 0 {
		t.Fatalf("outside midday quiet: %s", got)
	}
	set.QuietHours = config.QuietHours{}
	k, _ = newClock(set)
	if got := k.quietFor(at(paris, 2026, 3, 10, 23, 0), paris); got != 0 {
		t.Fatalf("no quiet hours: %s", got)
	}
}
