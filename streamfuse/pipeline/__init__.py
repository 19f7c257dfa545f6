"""The streaming pipeline: source -> sync -> register -> batch -> infer -> sink.

Read it in that order: :mod:`.sources` (capture workers), :mod:`.sync` (pairing by timestamp),
:mod:`.batching` (bounded queues and batches), :mod:`.sinks` (outputs), :mod:`.wire` (the ZeroMQ
frame format), :mod:`.stats` (counters and latency), :mod:`.runner` (the threads that join them)
and :mod:`.config` (the YAML file that describes a run).
"""
