package streams

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// The metrics of every durable consumer a Runner drives, by consumer name: what it
// settled, its batches, and how far behind its stream it is.
var (
	consumerMessages = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "ganglion_consumer_messages_total",
		Help: "Messages a consumer settled, by outcome: processed, retried (redelivered later) or dead_lettered.",
	}, []string{"consumer", "outcome"})
	consumerBatch = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ganglion_consumer_batch_messages",
		Help:    "Messages per handler call.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10),
	}, []string{"consumer"})
	consumerLagMessages = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ganglion_consumer_lag_messages",
		Help: "Messages of the consumer's stream (within its filter) not yet delivered to it, when it last settled one.",
	}, []string{"consumer"})
	writerPositions = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ganglion_stream_position",
		Help: "The last sequence of its stream's log that a writer projected into Postgres.",
	}, []string{"stream", "writer"})
	intentsSent = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "ganglion_intents_sent_total",
		Help: "Intents and stream writes this process sent, by stream and by the writer (shard) that owns them.",
	}, []string{"stream", "writer"})
	consumerLagSeconds = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ganglion_consumer_lag_seconds",
		Help: "Age of the last message the consumer processed: from its append to the stream to its ack.",
	}, []string{"consumer"})
)

// WriterPosition is the gauge of writer's projected position in stream.
func WriterPosition(stream, writer string) prometheus.Gauge {
	return writerPositions.WithLabelValues(stream, writer)
}

// consumerMetrics are one consumer's children of those metrics, looked up once.
type consumerMetrics struct {
	processed, retried, deadLettered prometheus.Counter
	batch                            prometheus.Observer
	lagMessages, lagSeconds          prometheus.Gauge
}

func newConsumerMetrics(consumer string) consumerMetrics {
	return consumerMetrics{
		processed:    consumerMessages.WithLabelValues(consumer, "processed"),
		retried:      consumerMessages.WithLabelValues(consumer, "retried"),
		deadLettered: consumerMessages.WithLabelValues(consumer, "dead_lettered"),
		batch:        consumerBatch.WithLabelValues(consumer),
		lagMessages:  consumerLagMessages.WithLabelValues(consumer),
		lagSeconds:   consumerLagSeconds.WithLabelValues(consumer),
	}
}

// observeProcessed records a processed message and the consumer's lag at it.
func (c consumerMetrics) observeProcessed(m jetstream.Msg) {
	c.processed.Inc()
	if meta, err := m.Metadata(); err == nil {
		c.lagMessages.Set(float64(meta.NumPending))
		c.lagSeconds.Set(time.Since(meta.Timestamp).Seconds())
	}
}
