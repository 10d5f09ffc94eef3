// The minimal model server of bench/gateway.ts: answers POST /v1/completions (and
// /v1/chat/completions) with a small fixed OpenAI-style JSON body, GET /health with 200, on
// 127.0.0.1:$PORT, HTTP/1.1 keep-alive (net/http). Nothing else, so that the upstream is never
// what limits a proxy in front of it.
//
// With $BENCH_STAMPS set, it appends to that file, in microseconds since the Unix epoch:
// "main T" (main() entered), "listen T" (socket listening) and, once, "first T" (first
// completion request received). The bench reads them to split a cold start into its parts.
// A relative $BENCH_STAMPS is taken inside $LOOM_WORKLOAD_DIR, the work directory Loom lends
// each replica read-write: a sandboxed replica can write nowhere the bench chose on the host.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

var completion = []byte(`{"id":"cmpl-bench","object":"text_completion","created":1700000000,"model":"bench","choices":[{"index":0,"text":" world","logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}`)
var completionLength = []string{strconv.Itoa(len(completion))}
var jsonType = []string{"application/json"}
var ok = []byte("ok\n")

func stamp(file, what string, t time.Time) {
	if file == "" {
		return
	}
	f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	fmt.Fprintf(f, "%s %d\n", what, t.UnixMicro())
	f.Close()
}

func main() {
	mainAt := time.Now()
	stamps := os.Getenv("BENCH_STAMPS")
	if dir := os.Getenv("LOOM_WORKLOAD_DIR"); stamps != "" && dir != "" && !filepath.IsAbs(stamps) {
		stamps = filepath.Join(dir, stamps)
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8000"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	listenAt := time.Now()
	stamp(stamps, "main", mainAt)
	stamp(stamps, "listen", listenAt)
	var first sync.Once
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/completions", "/v1/chat/completions":
			if stamps != "" {
				first.Do(func() { stamp(stamps, "first", time.Now()) })
			}
			_, _ = io.Copy(io.Discard, r.Body)
			h := w.Header()
			h["Content-Type"] = jsonType
			h["Content-Length"] = completionLength
			_, _ = w.Write(completion)
		case "/health":
			_, _ = w.Write(ok)
		default:
			http.NotFound(w, r)
		}
	})
	srv := &http.Server{Handler: handler, IdleTimeout: 10 * time.Minute}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
