package cli

import (
	"bytes"
	"log"
	"log/slog"
	"strings"
)

// stdLog carries what libraries print with the standard log package
// (grandcat/zeroconf prints "[zeroconf] no suitable IPv4 interface" and
// "[ERR] zeroconf: failed to send probe: ...") into the structured log, so
// that stderr stays one format (text or --log-json) a script can parse.
type stdLog struct{ log *slog.Logger }

// routeStdLog sends the standard log package's output to l.
func routeStdLog(l *slog.Logger) {
	log.SetFlags(0)
	log.SetPrefix("")
	log.SetOutput(stdLog{l})
}

func (w stdLog) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		msg := strings.TrimSpace(string(line))
		if msg == "" {
			continue
		}
		component := "library"
		if strings.Contains(msg, "zeroconf") {
			component = "zeroconf"
		}
		for _, tag := range []string{"[ERR] ", "[WARN] ", "[zeroconf] ", "zeroconf: "} {
			msg = strings.TrimPrefix(msg, tag)
		}
		w.log.Warn(msg, "component", component)
	}
	return len(p), nil
}
