#!/usr/bin/env python3
"""The limit for the inference path: onnxruntime in one process with the
same threads as nusad's engine, running batches back to back.
Prints JSON: {"batch": n, "runs": k, "seconds": s, "rows_per_s": r, "p50_ms": ..}"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

model, batch, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
shape = [batch if not isinstance(d, int) or d < 0 else d for d in inp.shape]
x = np.random.default_rng(1).random(shape, dtype=np.float32)
out = sess.get_outputs()[0].name
for _ in range(20):
    sess.run([out], {inp.name: x})
times = []
end = time.perf_counter() + seconds
while time.perf_counter() < end:
    t = time.perf_counter()
    sess.run([out], {inp.name: x})
    times.append(time.perf_counter() - t)
times.sort()
total = sum(times)
print(json.dumps({"batch": batch, "runs": len(times), "seconds": total, "rows_per_s": len(times) * batch / total,
                  "p50_ms": times[len(times) // 2] * 1000, "p99_ms": times[int(len(times) * 0.99)] * 1000}))
