package persister

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// The event writer's metrics: what it appends, and how long building the events, the
// log's acknowledgement and the projection into Postgres take. Its batch sizes are its
// consumer's (streams' ganglion_consumer_batch_messages).
var (
	buildSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "ganglion_persister_build_seconds",
		Help:    "Building and checking the events of one batch of intents.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	handedOn = promauto.NewCounter(prometheus.CounterOpts{
		Name: "ganglion_persister_handed_on_intents_total",
		Help: "Intents handed on to another writer, which owns their room since the live list of writers changed.",
	})
	appendedEvents = promauto.NewCounter(prometheus.CounterOpts{
		Name: "ganglion_persister_appended_events_total",
		Help: "Events appended to the events log by this process's writer.",
	})
	appendSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "ganglion_persister_append_seconds",
		Help:    "From a loop's first publish to each room's acknowledged append.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	projectSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "ganglion_persister_project_seconds",
		Help:    "One projection transaction into Postgres.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
)
