"""Prometheus metrics of one server, in their own registry (so that several apps in one process never clash).

    pengi_requests_total{endpoint, status}        requests answered, by endpoint and HTTP status
    pengi_errors_total{endpoint, code}            error responses by kind (the OpenAI error ``code``)
    pengi_request_latency_seconds{endpoint}       time from request start to the response (streams: to the end)
    pengi_queue_wait_seconds                      time a clip waits in the batcher's queue before its batch starts
    pengi_batch_size                              clips per batched model call (histogram)
    pengi_batch_seconds                           duration of each batched model call
    pengi_queue_depth                             clips waiting now
    pengi_requests_in_flight                      requests being served now
    pengi_generated_tokens_total                  tokens generated (all returned sequences)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def batch_buckets(max_batch_size: int) -> tuple[float, ...]:
    """1, 2, 4, ... up to and including ``max_batch_size``, so that full batches have their own bucket."""
    edges, b = [], 1
    while b < max_batch_size:
        edges.append(float(b))
        b *= 2
    edges.append(float(max_batch_size))
    return tuple(sorted(set(edges)))


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch_size: int = 32):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("pengi_requests", "Requests answered", ["endpoint", "status"], registry=r)
        self.errors = Counter("pengi_errors", "Error responses by kind", ["endpoint", "code"], registry=r)
        self.latency = Histogram("pengi_request_latency_seconds", "Request latency", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("pengi_queue_wait_seconds", "Time a clip waits before its batch starts",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("pengi_batch_size", "Clips per batched model call",
                                    buckets=batch_buckets(max_batch_size), registry=r)
        self.batch_seconds = Histogram("pengi_batch_seconds", "Duration of a batched model call",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("pengi_queue_depth", "Clips waiting in the batcher's queue", registry=r)
        self.in_flight = Gauge("pengi_requests_in_flight", "Requests being served", registry=r)
        self.tokens = Counter("pengi_generated_tokens", "Tokens generated", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
