package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Command is one run of a tool: its name (looked up in the runner's
// directory or PATH) and argument vector. It never goes through a shell.
type Command struct {
	Name string
	Args []string
	// Timeout bounds the run; when it passes, the tool's whole process
	// group is killed.
	Timeout time.Duration
}

func (c Command) String() string {
	s := c.Name
	for _, a := range c.Args {
		s += " " + a
	}
	return s
}

// Output is what a finished tool left: its output (each stream clipped
// at MaxOutput), exit code (-1 when it was killed) and run time.
type Output struct {
	Stdout, Stderr string
	ExitCode       int
	Duration       time.Duration
	// TimedOut says the timeout (or the context) killed it.
	TimedOut bool
}

// Process is a started tool.
type Process interface {
	// Wait waits for the tool to end and returns its output. The error
	// is set only when the tool could not be waited for; a tool that
	// failed or was killed has an Output saying so.
	Wait() (Output, error)
}

// Runner starts tools. ExecRunner runs the real ones; tests inject fakes
// that play captured outputs.
type Runner interface {
	Start(ctx context.Context, c Command) (Process, error)
}

// Run starts a tool and waits for it.
func Run(ctx context.Context, r Runner, c Command) (Output, error) {
	p, err := r.Start(ctx, c)
	if err != nil {
		return Output{}, err
	}
	return p.Wait()
}

// ErrToolMissing says a tool is not installed.
var ErrToolMissing = errors.New("not installed")

// ExecRunner runs tools as child processes, each in its own process group
// so that a timeout kills the tool and anything it started.
type ExecRunner struct {
	// Dir holds the tools; "" looks them up in PATH.
	Dir string
}

// Start starts the tool. It fails when the tool is missing or cannot be
// started; nothing is left running then.
func (r ExecRunner) Start(ctx context.Context, c Command) (Process, error) {
	if c.Timeout <= 0 {
		return nil, fmt.Errorf("%s: no timeout", c.Name)
	}
	path := c.Name
	if r.Dir != "" {
		path = r.Dir + "/" + c.Name
	}
	path, err := exec.LookPath(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (%w)", c.Name, ErrToolMissing, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	cmd := exec.CommandContext(ctx, path, c.Args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &execProcess{cmd: cmd, cancel: cancel, ctx: ctx, stdout: newCapped(MaxOutput), stderr: newCapped(MaxOutput)}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	cmd.Cancel = func() error {
		// The whole group: perftest and rping start no children today,
		// but a wrapper script (or a future version) could.
		if cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		return nil
	}
	// Output pipes held open by a stray grandchild must not hang Wait.
	cmd.WaitDelay = 2 * time.Second
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start %s: %w", c.Name, err)
	}
	return p, nil
}

type execProcess struct {
	cmd            *exec.Cmd
	ctx            context.Context
	cancel         context.CancelFunc
	stdout, stderr *capped
	start          time.Time
	once           sync.Once
	out            Output
	err            error
}

func (p *execProcess) Wait() (Output, error) {
	p.once.Do(func() {
		err := p.cmd.Wait()
		timedOut := p.ctx.Err() != nil
		// The group may hold something the tool started: it goes too.
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		p.cancel()
		p.out = Output{Stdout: p.stdout.String(), Stderr: p.stderr.String(), Duration: time.Since(p.start), ExitCode: p.cmd.ProcessState.ExitCode()}
		if timedOut {
			p.out.TimedOut = true
			p.out.ExitCode = -1
		}
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) && !errors.Is(err, exec.ErrWaitDelay) && !p.out.TimedOut {
			p.err = fmt.Errorf("wait for %s: %w", p.cmd.Path, err)
		}
	})
	return p.out, p.err
}

// capped keeps the first n bytes written and drops the rest (the parsers
// refuse output beyond MaxOutput anyway).
type capped struct {
	mu  sync.Mutex
	buf bytes.Buffer
	n   int
}

func newCapped(n int) *capped { return &capped{n: n} }

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.n + 1 - c.buf.Len(); room > 0 {
		if len(p) > room {
			c.buf.Write(p[:room])
		} else {
			c.buf.Write(p)
		}
	}
	return len(p), nil
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}
