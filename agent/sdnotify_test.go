package agent

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roce-agent/roce-agent/nic/nettest"
)

func monotonicUsec(t *testing.T) int64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

// TestReloadSpeaksNotifyReload: a reload after READY=1, accepted or
// refused, sends one message with RELOADING=1, MONOTONIC_USEC= (the
// CLOCK_MONOTONIC time of the reload, as Type=notify-reload requires) and
// a STATUS=, then one with READY=1 and the new STATUS= (saying when the
// reload was refused). A reload before the first READY=1 is part of
// starting and sends nothing. No root: a fake namespace on the soft-roce
// fixture tree.
func TestReloadSpeaksNotifyReload(t *testing.T) {
	systemd := nettest.NewSystemd(t)
	t.Setenv("NOTIFY_SOCKET", systemd.Socket)
	host, c := fakeHost(t, 1)
	d := fakeHostDaemon(t, host, c)
	good := func() (Config, error) { return c, nil }
	bad := func() (Config, error) { return Config{}, errors.New("config has no settings") }

	// Starting: no notification for a reload, then READY=1.
	if err := d.Reload(good); err != nil {
		t.Fatal(err)
	}
	d.runReconcile()
	if m := systemd.Next(t); len(m) != 2 || m[0] != "READY=1" || !strings.HasPrefix(m[1], "STATUS=") || !strings.Contains(m[1], " rails healthy, last reconcile ") {
		t.Fatalf("first message %q, want READY=1 and the status", m)
	}

	for _, tc := range []struct {
		name   string
		load   func() (Config, error)
		status string
	}{
		{"accepted", good, "STATUS="},
		{"refused", bad, "STATUS=reload refused, running config kept (see the log); "},
	} {
		before := monotonicUsec(t)
		err := d.Reload(tc.load)
		after := monotonicUsec(t)
		if (err != nil) != (tc.name == "refused") {
			t.Errorf("%s reload: %v", tc.name, err)
		}
		m := systemd.Next(t)
		if len(m) != 3 || m[0] != "RELOADING=1" || !strings.HasPrefix(m[1], "MONOTONIC_USEC=") || m[2] != "STATUS=reloading the configuration" {
			t.Fatalf("%s reload: first message %q, want RELOADING=1, MONOTONIC_USEC= and STATUS= together", tc.name, m)
		}
		usec, err := strconv.ParseInt(strings.TrimPrefix(m[1], "MONOTONIC_USEC="), 10, 64)
		if err != nil || usec < before || usec > after {
			t.Errorf("%s reload: %s, want CLOCK_MONOTONIC in µs between %d and %d", tc.name, m[1], before, after)
		}
		m = systemd.Next(t)
		if len(m) != 2 || m[0] != "READY=1" || !strings.HasPrefix(m[1], tc.status) || !strings.Contains(m[1], " rails healthy, last reconcile ") ||
			(tc.name == "accepted" && strings.Contains(m[1], "refused")) {
			t.Errorf("%s reload: second message %q, want READY=1 and %s...", tc.name, m, tc.status)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if m := systemd.Pending(); len(m) > 0 {
		t.Errorf("unexpected notifications %q", m)
	}
}
