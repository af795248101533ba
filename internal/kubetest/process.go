package kubetest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/projectionist/projectionist/internal/proctest"
)

// stopTimeout is how long a component gets to exit after SIGTERM before its
// process group is killed.
const stopTimeout = 10 * time.Second

// process is a component started in its own process group, its output going
// to a log file in the Env's temporary directory.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process has exited
	waitErr error         // set before done is closed
}

// startProcess starts path with args, its stdout and stderr going to
// <dir>/<name>.log.
func startProcess(dir, name string, env []string, path string, args ...string) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("kubetest: creating %s log: %w", name, err)
	}
	defer logFile.Close() // the child holds its own descriptor

	cmd := exec.Command(path, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own group, so that stop reaches anything it forks.
		Setpgid: true,
		// Dies with the test binary even when Stop never runs (a panic, or
		// go test's -timeout), rather than lingering on the machine.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("kubetest: starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes an unexpected exit, with the tail of the log.
func (p *process) exitError() error {
	return fmt.Errorf("kubetest: %s exited: %v\n--- %s (tail) ---\n%s", p.name, p.waitErr, p.logPath, tailFile(p.logPath))
}

// stop sends SIGTERM to the process group, and SIGKILL if it has not exited
// within stopTimeout, then waits for it.
func (p *process) stop() error {
	if p.exited() {
		return nil
	}
	pgid := p.cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kubetest: stopping %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kubetest: killing %s: %w", p.name, err)
	}
	<-p.done
	return nil
}

// tailFile returns about the last 40 lines of the file at path.
func tailFile(path string) string {
	const maxBytes, maxLines = 8 << 10, 40
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	if len(b) > maxBytes {
		b = b[len(b)-maxBytes:]
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another
// process can take it before the component binds it; startComponent retries
// with a new port when that happens.
func freePort() (int, error) {
	port, err := proctest.FreePort()
	if err != nil {
		return 0, fmt.Errorf("kubetest: %w", err)
	}
	return port, nil
}
