package probe

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func read(t *testing.T, name string) string {
	t.Helper()
	if name == "" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6*math.Max(1, math.Abs(b)) }

// The captures are real runs over soft-RoCE (rxe) between two kernels.
func TestParseBandwidthCaptures(t *testing.T) {
	mib := float64(1<<20) * 8 / 1e9
	for _, tc := range []struct {
		file        string
		rows        int
		bytes, iter int64
		peak, avg   float64
	}{
		{"ib_write_bw_v4.client.txt", 1, 65536, 5000, 129.09 * mib, 126.26 * mib},
		{"ib_write_bw_v4.server.txt", 1, 65536, 5000, 0, 0}, // the server prints the client's figures
		{"ib_write_bw_v6.client.txt", 1, 65536, 5000, 129.22 * mib, 127.31 * mib},
		{"ib_write_bw_v4_gbits.client.txt", 1, 65536, 2000, 1.17, 1.06},
		{"ib_write_bw_v4_duration.client.txt", 1, 65536, 12256, 0, 127.65 * mib},
		{"ib_write_bw_v4_bidir_q2.client.txt", 1, 65536, 2000, 270.39 * mib, 236.24 * mib},
		{"ib_write_bw_rdmacm_v4.client.txt", 1, 65536, 0, 0, 0},
		{"ib_write_bw_v4_all_sizes.client.txt", 23, 0, 0, 0, 0},
	} {
		t.Run(tc.file, func(t *testing.T) {
			r, err := ParseBandwidth(read(t, tc.file), "")
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Rows) != tc.rows {
				t.Fatalf("%d rows, want %d", len(r.Rows), tc.rows)
			}
			last := r.Last()
			if last.AvgGbps <= 0 || last.PeakGbps < 0 {
				t.Errorf("figures %+v", last)
			}
			if tc.bytes != 0 && (last.MessageBytes != tc.bytes || (tc.iter != 0 && last.Iterations != tc.iter)) {
				t.Errorf("row %+v, want %d bytes, %d iterations", last, tc.bytes, tc.iter)
			}
			if tc.avg != 0 && (!near(last.AvgGbps, tc.avg) || !near(last.PeakGbps, tc.peak)) {
				t.Errorf("peak %v avg %v Gb/s, want %v %v", last.PeakGbps, last.AvgGbps, tc.peak, tc.avg)
			}
		})
	}
}

func TestParseBandwidthFailures(t *testing.T) {
	for _, tc := range []struct {
		stdout, stderr, want string
	}{
		{"ib_write_bw_no_server.txt", "ib_write_bw_no_server.stderr.txt", "Couldn't connect to 10.0.0.0:18599"},
		{"", "ib_write_bw_v6_oob6_error.stderr.txt", "Address family for hostname not supported"},
	} {
		_, err := ParseBandwidth(read(t, tc.stdout), read(t, tc.stderr))
		var te *ToolError
		if !errors.As(err, &te) || !strings.Contains(te.Message, tc.want) {
			t.Errorf("%s: %v, want a tool error with %q", tc.stderr, err, tc.want)
		}
	}
	good := read(t, "ib_write_bw_v4.client.txt")
	for name, out := range map[string]string{
		"empty":       "",
		"truncated":   good[:strings.Index(good, " #bytes")],
		"header only": good[:strings.Index(good, " 65536 ")],
		"inf":         strings.Replace(good, "126.26", "inf", 1),
		"nan":         strings.Replace(good, "126.26", "-nan", 1),
		"garbage":     "\x00\xff#bytes BW[furlongs]\n1 2 3 4 5\n",
	} {
		if _, err := ParseBandwidth(out, ""); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseLatencyCaptures(t *testing.T) {
	r, err := ParseLatency(read(t, "ib_write_lat_v4.client.txt"), "")
	if err != nil {
		t.Fatal(err)
	}
	want := LatencyResult{MessageBytes: 2, Iterations: 1000, MinUs: 16.24, MaxUs: 539.54, TypicalUs: 16.83, AvgUs: 18.93, StdevUs: 13.31, P99Us: 110.10, P999Us: 539.54}
	if r != want {
		t.Errorf("got %+v\nwant %+v", r, want)
	}
	for _, f := range []string{"ib_write_lat_v4.server.txt", "ib_write_lat_v6.client.txt"} {
		if r, err := ParseLatency(read(t, f), ""); err != nil || r.TypicalUs <= 0 {
			t.Errorf("%s: %+v %v", f, r, err)
		}
	}
	good := read(t, "ib_write_lat_v4.client.txt")
	for name, out := range map[string]string{
		"empty":     "",
		"nan":       strings.Replace(good, "18.93", "-nan", 1),
		"inf":       strings.Replace(good, "110.10", "inf", 1),
		"no row":    good[:strings.Index(good, " 2       1000")],
		"bw output": read(t, "ib_write_bw_v4.client.txt"),
	} {
		if _, err := ParseLatency(out, ""); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseRping(t *testing.T) {
	for _, f := range []string{"rping_v4.client.txt", "rping_v6.client.txt"} {
		r, err := ParseRping(read(t, f), read(t, "rping_v4.client.stderr.txt"), 0, 5)
		if err != nil || r.Pings != 5 {
			t.Errorf("%s: %+v %v", f, r, err)
		}
	}
	_, err := ParseRping(read(t, "rping_v4_no_server.txt"), read(t, "rping_v4_no_server.stderr.txt"), 255, 3)
	var te *ToolError
	if !errors.As(err, &te) || !strings.Contains(te.Message, "RDMA_CM_EVENT_REJECTED") {
		t.Errorf("no server: %v", err)
	}
	if _, err := ParseRping(read(t, "rping_v4.client.txt"), "", 0, 7); err == nil {
		t.Error("5 of 7 pings accepted")
	}
	if _, err := ParseRping("", "", 1, 3); err == nil {
		t.Error("exit 1 accepted")
	}
}

func FuzzParseBandwidth(f *testing.F) {
	for _, n := range []string{"ib_write_bw_v4.client.txt", "ib_write_bw_v4_gbits.client.txt", "ib_write_bw_v4_all_sizes.client.txt", "ib_write_bw_no_server.txt"} {
		if b, err := os.ReadFile(filepath.Join("testdata", n)); err == nil {
			f.Add(string(b))
		}
	}
	f.Fuzz(func(t *testing.T, out string) {
		r, err := ParseBandwidth(out, "")
		if err != nil {
			return
		}
		for _, row := range r.Rows {
			if math.IsNaN(row.AvgGbps) || math.IsInf(row.AvgGbps, 0) || row.AvgGbps < 0 || row.MessageBytes < 0 {
				t.Fatalf("accepted %+v", row)
			}
		}
	})
}

func FuzzParseLatency(f *testing.F) {
	for _, n := range []string{"ib_write_lat_v4.client.txt", "ib_write_lat_v6.client.txt"} {
		if b, err := os.ReadFile(filepath.Join("testdata", n)); err == nil {
			f.Add(string(b))
		}
	}
	f.Fuzz(func(t *testing.T, out string) {
		r, err := ParseLatency(out, "")
		if err != nil {
			return
		}
		if r.MinUs > r.MaxUs || r.P99Us > r.P999Us || math.IsNaN(r.AvgUs) || r.MinUs < 0 {
			t.Fatalf("accepted %+v", r)
		}
	})
}
