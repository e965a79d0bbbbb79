package agent

import (
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier speaks the systemd notify protocol. Every call is a no-op
// outside systemd (NOTIFY_SOCKET unset), as in a Kubernetes pod.
type Notifier struct{}

// Ready says the first reconcile is done (Type=notify).
func (Notifier) Ready(status string) error {
	return notify(daemon.SdNotifyReady + "\nSTATUS=" + status)
}

// Status sets the one-line status systemctl shows.
func (Notifier) Status(status string) error { return notify("STATUS=" + status) }

// Watchdog pings the watchdog.
func (Notifier) Watchdog() error { return notify(daemon.SdNotifyWatchdog) }

// Stopping says the service is shutting down.
func (Notifier) Stopping() error { return notify(daemon.SdNotifyStopping) }

// Reloading says a configuration reload began. MONOTONIC_USEC= (the
// CLOCK_MONOTONIC time) goes in the same message: Type=notify-reload
// (systemd 253 and later) needs it to tell this reload from an earlier
// one; Type=notify ignores it. READY=1 ends the reload.
func (Notifier) Reloading() error {
	return notify(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=reloading the configuration")
}

// WatchdogInterval is how often to ping: half of WatchdogSec, 0 when the
// watchdog is off.
func (Notifier) WatchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}

func notify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}
