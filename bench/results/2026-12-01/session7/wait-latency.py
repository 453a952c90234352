import os, statistics, time
import redis
from features.redis_connect import connect, split_replicas
url, n = split_replicas(os.environ["STREAMFER_REDIS_URL"])
c = connect(url)
node = c.get_primaries()[0]
conn = c.get_redis_connection(node)
sha = conn.script_load("redis.call('SET', KEYS[1], ARGV[1]) return 1")
key = "sf:waitlat:{x}"
# a key of this node's slots
for i in range(100000):
    k = f"sf:waitlat:{{{i}}}"
    if c.keyslot(k) in range(*[(s[0], s[1] + 1) for s in [next(iter(c.cluster_slots().items()))[0]]][0]) and c.nodes_manager.get_node_from_slot(c.keyslot(k)).name == node.name:
        key = k; break
def timed(wait):
    out = []
    for _ in range(3000):
        t = time.perf_counter()
        if wait:
            p = conn.pipeline(transaction=False); p.evalsha(sha, 1, key, "v"); p.execute_command("WAIT", 1, 1000); r = p.execute(); assert r[1] >= 1
        else:
            conn.evalsha(sha, 1, key, "v")
        out.append((time.perf_counter() - t) * 1e6)
    out.sort(); return statistics.median(out), out[int(len(out) * 0.99)]
for _ in range(2):
    print("no WAIT  p50/p99 µs: %.0f / %.0f" % timed(False))
    print("WAIT 1   p50/p99 µs: %.0f / %.0f" % timed(True))
