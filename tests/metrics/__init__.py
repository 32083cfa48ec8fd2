"""Tests of coalmine.metrics: the recorder, the flusher, the Prometheus exposition."""
