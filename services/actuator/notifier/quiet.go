package notifier

import (
	"fmt"
	"strings"
	"time"

	"github.com/pwsync/pwsync/shared/config"
)

// clock knows each user's time zone and the quiet hours. It is pure: the
// time is passed in.
type clock struct {
	def        *time.Location
	zones      map[string]*time.Location // lower-case UPN or "@domain"
	start, end int                       // minutes after midnight; start == end: none
}

func newClock(c config.Notify) (*clock, error) {
	def, err := time.LoadLocation(c.DefaultTimeZone)
	if err != nil {
		return nil, fmt.Errorf("notify.default_time_zone: %w", err)
	}
	k := &clock{def: def, zones: map[string]*time.Location{}}
	for who, tz := range c.TimeZones {
		loc, err := time.LoadLocation(tz)
		if err != nil {
			return nil, fmt.Errorf("notify.time_zones.%s: %w", who, err)
		}
		k.zones[strings.ToLower(who)] = loc
	}
	if c.QuietHours.Start != "" {
		if k.start, err = config.ParseClock(c.QuietHours.Start); err != nil {
			return nil, fmt.Errorf("notify.quiet_hours.start: %w", err)
		}
		if k.end, err = config.ParseClock(c.QuietHours.End); err != nil {
			return nil, fmt.Errorf("notify.quiet_hours.end: %w", err)
		}
	}
	return k, nil
}

// zone is the user's time zone: by UPN, then by domain, else the default.
func (k *clock) zone(upn string) *time.Location {
	upn = strings.ToLower(upn)
	if loc, ok := k.zones[upn]; ok {
		return loc
	}
	if i := strings.LastIndexByte(upn, '@'); i >= 0 {
		if loc, ok := k.zones[upn[i:]]; ok {
			return loc
		}
	}
	return k.def
}

// quietFor says how long a notice at now must wait for the quiet hours
// (in loc) to end; 0 outside quiet hours. The end is computed on the local
// calendar, so a DST change during the night is honoured.
func (k *clock) quietFor(now time.Time, loc *time.Location) time.Duration {
	if k.start == k.end {
		return 0
	}
	local := now.In(loc)
	m := local.Hour()*60 + local.Minute()
	var quiet bool
	if k.start < k.end {
		quiet = m >= k.start && m < k.end
	} else { // wraps past midnight, e.g. 20:00-08:00
		quiet = m >= k.start || m < k.end
	}
	if !quiet {
		return 0
	}
	y, mo, d := local.Date()
	end := time.Date(y, mo, d, k.end/60, k.end%60, 0, 0, loc)
	if !end.After(local) {
		end = time.Date(y, mo, d+1, k.end/60, k.end%60, 0, 0, loc)
	}
	return end.Sub(now)
}
