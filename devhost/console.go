package devhost

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
)

// ConsoleCategory is the log category under which the host records what a worker process
// writes to stdout and stderr (WorkerConstants.FunctionConsoleLogCategoryName).
const ConsoleCategory = "Host.Function.Console"

// ConsoleLevel is the level at which the host records one line a custom handler writes:
// Information for stdout; for stderr Warning when the line contains "warn" (any case), and
// Error otherwise. Source: azure-functions-host WorkerProcess.ParseErrorMessageAndLog, which
// reads both streams line by line, with UseStdErrorStreamForErrorsOnly, which
// HttpWorkerDescription sets to true for custom handlers.
func ConsoleLevel(stderr bool, line string) slog.Level {
	switch {
	case !stderr:
		return slog.LevelInfo
	case strings.Contains(strings.ToLower(line), "warn"):
		return slog.LevelWarn
	}
	return slog.LevelError
}

// console is one of the handler's output streams, logged line by line at ConsoleLevel.
type console struct {
	log    *slog.Logger
	stderr bool
	mu     sync.Mutex
	buf    []byte
}

// Write logs each complete line; a partial line waits for the rest.
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p...)
	for {
		i := bytes.IndexByte(c.buf, '\n')
		if i < 0 {
			break
		}
		c.emit(string(bytes.TrimRight(c.buf[:i], "\r")))
		c.buf = c.buf[i+1:]
	}
	return len(p), nil
}

// flush logs a last line that ended without a newline (the process exited).
func (c *console) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.buf) > 0 {
		c.emit(string(c.buf))
		c.buf = nil
	}
}

func (c *console) emit(line string) {
	stream := "stdout"
	if c.stderr {
		stream = "stderr"
	}
	c.log.Log(context.Background(), ConsoleLevel(c.stderr, line), line, "category", ConsoleCategory, "stream", stream)
}
