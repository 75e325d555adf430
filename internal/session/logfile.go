package session

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// logFile appends lines to a plugin's log, rotating it to path.1 when it
// would grow past max bytes. Sessions of one plugin share it; it is safe
// for concurrent use and never fails (a program's output must not stall
// because its log cannot be written).
type logFile struct {
	mu   sync.Mutex
	path string
	max  int64
	f    *os.File
	size int64
}

func (l *logFile) writeLine(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil && !l.open() {
		return
	}
	if l.size > 0 && l.size+int64(len(line)) > l.max {
		l.f.Close()
		l.f = nil
		os.Rename(l.path, l.path+".1")
		if !l.open() {
			return
		}
	}
	n, _ := l.f.WriteString(line)
	l.size += int64(n)
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

func (l *logFile) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

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
