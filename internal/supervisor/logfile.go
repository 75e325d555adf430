package supervisor

import (
	"fmt"
	"time"

	"github.com/nearbymesh/nearby/internal/fsutil"
)

// logFile is a plugin's output log: appended to, rotated to path.1 past
// Config.LogMaxBytes. The output of an old and a new instance may overlap
// during a restart; fsutil.Log is safe for that.
type logFile = fsutil.Log

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
		lf = &logFile{Path: path, Max: s.cfg.LogMaxBytes}
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
