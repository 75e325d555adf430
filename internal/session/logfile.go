package session

import (
	"bufio"
	"fmt"
	"io"
	"time"

	"github.com/nearbymesh/nearby/internal/fsutil"
)

// logFile is a hosted plugin's log, shared by its sessions: appended to,
// rotated to path.1 past Config.LogMaxBytes (see fsutil.Log).
type logFile struct{ fsutil.Log }

func (l *logFile) writeLine(line string) { l.WriteString(line) }

func (l *logFile) close() { l.Close() }

// printf writes one line of the node's own about a session.
func (l *logFile) printf(id, format string, args ...any) {
	if l == nil {
		return
	}
	l.writeLine(fmt.Sprintf("%s nearby: session %s: %s\n", time.Now().Format(time.RFC3339Nano), short(id), fmt.Sprintf(format, args...)))
}

// maxLogLine caps one line of a program's stderr in the log; the rest of a
// longer line is dropped.
const maxLogLine = 16 << 10

// copyLines copies r to l line by line, each prefixed with the session, until
// r ends.
func (l *logFile) copyLines(id string, r io.Reader) {
	br := bufio.NewReaderSize(r, maxLogLine)
	prefix := " session " + short(id) + ": "
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && l != nil {
			s := string(line)
			if s[len(s)-1] != '\n' {
				s += "\n"
			}
			l.writeLine(time.Now().Format(time.RFC3339Nano) + prefix + s)
		}
		switch err {
		case nil, bufio.ErrBufferFull:
			if err == bufio.ErrBufferFull {
				// Drop the rest of an over-long line.
				for err == bufio.ErrBufferFull {
					_, err = br.ReadSlice('\n')
				}
				if err != nil {
					return
				}
			}
		default:
			return
		}
	}
}

// short returns the first 8 characters of a session id.
func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
