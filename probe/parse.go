// Package probe runs and reads the RDMA probe tools: ib_write_bw and
// ib_write_lat (perftest) and rping (rdma-core). This file parses their
// output into typed results; it never trusts the output to be whole.
package probe

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// MaxOutput bounds the tool output a parser reads.
const MaxOutput = 1 << 20

// BandwidthRow is one result line of ib_write_bw.
type BandwidthRow struct {
	MessageBytes int64
	Iterations   int64
	// PeakGbps and AvgGbps are in Gb/s (10^9 bits), whatever unit the
	// tool printed.
	PeakGbps, AvgGbps float64
	MsgRateMpps       float64
}

// BandwidthResult is an ib_write_bw report: one row per message size
// (one without -a).
type BandwidthResult struct {
	Rows []BandwidthRow
}

// Last is the last row: the result of a single-size run.
func (r BandwidthResult) Last() BandwidthRow { return r.Rows[len(r.Rows)-1] }

// LatencyResult is an ib_write_lat report, in microseconds.
type LatencyResult struct {
	MessageBytes                   int64
	Iterations                     int64
	MinUs, MaxUs, TypicalUs, AvgUs float64
	StdevUs, P99Us, P999Us         float64
}

// RpingResult is an rping client run.
type RpingResult struct {
	// Pings is how many "ping data" lines the client printed (with -v).
	Pings int
}

// ToolError is a failure the tool reported: its own words, clipped.
type ToolError struct {
	Tool    string
	Message string
}

func (e *ToolError) Error() string { return e.Tool + ": " + e.Message }

// known failure lines, in the order they are the most telling.
var failures = []string{
	"Couldn't connect to", "Unable to connect", "Couldn't listen to port", "Port number", "Requested mtu is higher",
	"IB device", "No IB devices found", "Couldn't get context", "Failed to modify QP", "Completion with error",
	"Failed status", "Found Incompatibility issue with GID types", "Failed to exchange data", "BW result is below bw limit",
	"Address family for hostname not supported", "Problem in resolving basic address", "Unable to init the socket connection",
	"cma event", "connect error", "rdma_resolve_addr", "getaddrinfo failed", "data mismatch", "rping client failed",
}

// toolError finds the most telling failure line in the output, or nil.
func toolError(tool string, outputs ...string) error {
	var lines []string
	for _, o := range outputs {
		for _, l := range strings.Split(o, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				lines = append(lines, l)
			}
		}
	}
	for _, f := range failures {
		for _, l := range lines {
			if strings.Contains(l, f) {
				return &ToolError{Tool: tool, Message: clip(l)}
			}
		}
	}
	return nil
}

func clip(s string) string {
	const max = 200
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// number parses a figure perftest printed; inf and nan (perftest prints
// them on zero-duration runs) are refused.
func number(s string) (float64, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", clip(s))
	}
	if math.IsInf(f, 0) || math.IsNaN(f) || f < 0 {
		return 0, fmt.Errorf("%q is not a measurement", s)
	}
	return f, nil
}

func integer(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a count", clip(s))
	}
	return n, nil
}

// ParseBandwidth reads ib_write_bw's stdout (stderr for its failures):
// the rows after the "#bytes #iterations BW peak[...]" header, in MB/sec
// (2^20 bytes, perftest's MiB) or Gb/sec (--report_gbits).
func ParseBandwidth(stdout, stderr string) (BandwidthResult, error) {
	var r BandwidthResult
	if len(stdout) > MaxOutput || len(stderr) > MaxOutput {
		return r, errors.New("ib_write_bw: output larger than 1 MiB")
	}
	toGbps := 0.0
	for _, line := range strings.Split(stdout, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "#bytes" {
			switch {
			case strings.Contains(line, "[Gb/sec]"):
				toGbps = 1
			case strings.Contains(line, "[MB/sec]") || strings.Contains(line, "[MiB/sec]"):
				toGbps = float64(1<<20) * 8 / 1e9
			default:
				return r, fmt.Errorf("ib_write_bw: unknown unit in %q", clip(strings.TrimSpace(line)))
			}
			if strings.Contains(line, "#sl") {
				return r, errors.New("ib_write_bw: the raw QoS report (#sl column) is not supported")
			}
			continue
		}
		if toGbps == 0 || len(f) == 0 || strings.HasPrefix(f[0], "---") {
			continue
		}
		if len(f) != 5 && len(f) != 6 { // 6 with --cpu_util
			continue // warnings between rows
		}
		if _, err := strconv.ParseInt(f[0], 10, 64); err != nil {
			continue
		}
		row, err := bandwidthRow(f, toGbps)
		if err != nil {
			return r, fmt.Errorf("ib_write_bw: row %q: %w", clip(strings.TrimSpace(line)), err)
		}
		r.Rows = append(r.Rows, row)
	}
	if len(r.Rows) == 0 {
		if err := toolError("ib_write_bw", stderr, stdout); err != nil {
			return r, err
		}
		return r, errors.New("ib_write_bw: no result in its output")
	}
	return r, nil
}

func bandwidthRow(f []string, toGbps float64) (BandwidthRow, error) {
	var row BandwidthRow
	var err error
	if row.MessageBytes, err = integer(f[0]); err != nil {
		return row, fmt.Errorf("#bytes: %w", err)
	}
	if row.Iterations, err = integer(f[1]); err != nil {
		return row, fmt.Errorf("#iterations: %w", err)
	}
	peak, err := number(f[2])
	if err != nil {
		return row, fmt.Errorf("BW peak: %w", err)
	}
	avg, err := number(f[3])
	if err != nil {
		return row, fmt.Errorf("BW average: %w", err)
	}
	if row.MsgRateMpps, err = number(f[4]); err != nil {
		return row, fmt.Errorf("MsgRate: %w", err)
	}
	row.PeakGbps, row.AvgGbps = peak*toGbps, avg*toGbps
	return row, nil
}

// ParseLatency reads ib_write_lat's stdout: the row after the "#bytes
// #iterations t_min[usec] ..." header.
func ParseLatency(stdout, stderr string) (LatencyResult, error) {
	var r LatencyResult
	if len(stdout) > MaxOutput || len(stderr) > MaxOutput {
		return r, errors.New("ib_write_lat: output larger than 1 MiB")
	}
	header := false
	for _, line := range strings.Split(stdout, "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[0] == "#bytes" && strings.HasPrefix(f[2], "t_min") {
			header = true
			continue
		}
		if !header || len(f) != 9 {
			continue
		}
		if _, err := strconv.ParseInt(f[0], 10, 64); err != nil {
			continue
		}
		var err error
		if r.MessageBytes, err = integer(f[0]); err != nil {
			return r, fmt.Errorf("ib_write_lat: #bytes: %w", err)
		}
		if r.Iterations, err = integer(f[1]); err != nil {
			return r, fmt.Errorf("ib_write_lat: #iterations: %w", err)
		}
		vals := make([]float64, 7)
		names := []string{"t_min", "t_max", "t_typical", "t_avg", "t_stdev", "99% percentile", "99.9% percentile"}
		for i := range vals {
			if vals[i], err = number(f[2+i]); err != nil {
				return r, fmt.Errorf("ib_write_lat: %s: %w", names[i], err)
			}
		}
		r.MinUs, r.MaxUs, r.TypicalUs, r.AvgUs, r.StdevUs, r.P99Us, r.P999Us = vals[0], vals[1], vals[2], vals[3], vals[4], vals[5], vals[6]
		if r.MinUs > r.MaxUs || r.P99Us > r.P999Us {
			return r, fmt.Errorf("ib_write_lat: inconsistent row %q", clip(strings.TrimSpace(line)))
		}
		return r, nil
	}
	if err := toolError("ib_write_lat", stderr, stdout); err != nil {
		return r, err
	}
	return r, errors.New("ib_write_lat: no result in its output")
}

// ParseRping reads an rping client run (-v -C count): it succeeded when
// it exited 0 and printed count "ping data" lines. The disconnect
// messages rping prints on stderr at the end are not failures.
func ParseRping(stdout, stderr string, exitCode, count int) (RpingResult, error) {
	var r RpingResult
	if len(stdout) > MaxOutput || len(stderr) > MaxOutput {
		return r, errors.New("rping: output larger than 1 MiB")
	}
	for _, line := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(line, "ping data: rdma-ping-") {
			r.Pings++
		}
	}
	if err := toolError("rping", stderr, stdout); err != nil {
		return r, err
	}
	if exitCode != 0 {
		return r, &ToolError{Tool: "rping", Message: fmt.Sprintf("exit status %d", exitCode)}
	}
	if count > 0 && r.Pings != count {
		return r, fmt.Errorf("rping: %d of %d pings answered", r.Pings, count)
	}
	return r, nil
}
