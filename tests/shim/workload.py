"""Allocation-heavy multithreaded workload for the shim's real-program test (run with
PYTHONMALLOC=malloc so every Python object comes from the preloaded allocator). Prints a digest
that must not depend on the allocator."""
import hashlib
import threading

results = {}


def work(tid):
    d = {}
    out = []
    for i in range(60000):
        key = "k%d-%d" % (tid, i % 7000)
        d[key] = [i, str(i) * (i % 13), (tid, i)]
        if i % 5 == 0:
            out.append(bytes(range(i % 200)) * 3)
        if i % 9000 == 8999:
            d = {k: v for k, v in d.items() if hash(k) % 2 == 0 or True}
            out = out[len(out) // 2:]
    h = hashlib.sha256()
    for k in sorted(d):
        h.update(k.encode())
        h.update(repr(d[k]).encode())
    for b in out:
        h.update(b)
    results[tid] = h.hexdigest()


threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for tid in sorted(results):
    print(tid, results[tid])
