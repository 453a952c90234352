"""The local development stack behind `streamfer up/down/status`: a KRaft broker and redis-server.

`config` (what is asked: home, ports, version, from STREAMFER_*), `discovery` (where Java,
redis-server, Maven and the Kafka jars come from), `processes` (pids, spawns, ports, logs,
locks) and `local` (`LocalStack`: up/down/status composed from those).
"""
