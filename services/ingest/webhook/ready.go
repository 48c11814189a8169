package webhook

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// NATSReady is a Config.Ready for a NATS connection: while it is not
// connected every POST would end in a 503 after the publish timeout, so a load
// balancer may as well send Graph elsewhere.
func NATSReady(nc *nats.Conn) func() error {
	return func() error {
		if s := nc.Status(); s != nats.CONNECTED {
			return fmt.Errorf("nats connection is %s", s)
		}
		return nil
	}
}
