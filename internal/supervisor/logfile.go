package supervisor

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// logFile appends a plugin's output to a file, rotating it to path.1 when
// it would grow past max bytes. It is safe for concurrent use: the output
// of an old and a new instance may overlap during a restart.
type logFile struct {
	mu   sync.Mutex
	path string
	max  int64
	f    *os.File
	size int64
}

// Write implements io.Writer. It never fails: a plugin's output must not
// stall because its log cannot be written.
func (l *logFile) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil && !l.open() {
		return len(b), nil
	}
	if l.size > 0 && l.size+int64(len(b)) > l.max {
		l.f.Close()
		l.f = nil
		os.Rename(l.path, l.path+".1")
		if !l.open() {
			return len(b), nil
		}
	}
	n, _ := l.f.Write(b)
	l.size += int64(n)
	return len(b), nil
}

func (l *logFile) open() bool {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return false
	}
	l.f, l.size = f, fi.Size()
	return true
}

// Close closes the file; a later Write reopens it.
func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// logFor returns the named plugin's log, or nil without a LogDir.
func (s *Supervisor) logFor(name string) *logFile {
	path := s.LogPath(name)
	if path == "" {
		return nil
	}
	s.logsMu.Lock()
	defer s.logsMu.Unlock()
	lf := s.logs[name]
	if lf == nil {
		lf = &logFile{path: path, max: s.cfg.LogMaxBytes}
		s.logs[name] = lf
	}
	return lf
}

// logLine writes one line of the supervisor's own into a plugin's log.
func (s *Supervisor) logLine(name, format string, args ...any) {
	lf := s.logFor(name)
	if lf == nil {
		return
	}
	fmt.Fprintf(lf, "%s nearby: %s\n", time.Now().Format(time.RFC3339Nano), fmt.Sprintf(format, args...))
}
