package client

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// The client API's metrics, named and labelled as Synapse's, so dashboards made for
// Synapse read them: servlet is the route's path template.
var (
	requestsReceived = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "synapse_http_server_requests_received_total",
		Help: "Requests received, by method and route.",
	}, []string{"method", "servlet"})
	responseTime = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "synapse_http_server_response_time_seconds",
		Help:    "Time to answer a request, by method, route and status code.",
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"method", "servlet", "code"})
)

// measured counts and times the requests of one route.
func measured(method, servlet string, h http.HandlerFunc) http.HandlerFunc {
	received := requestsReceived.WithLabelValues(method, servlet)
	return func(w http.ResponseWriter, r *http.Request) {
		received.Inc()
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h(sw, r)
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		responseTime.WithLabelValues(method, servlet, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
	}
}

// statusWriter remembers the status code of a response. It passes ReadFrom on, so a
// download still reaches the connection's sendfile, and unwraps for
// http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return io.Copy(w.ResponseWriter, r)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
