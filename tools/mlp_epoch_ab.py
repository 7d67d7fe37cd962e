# One process times the 784-300-100-10 MLP epoch (20,000 random rows, batch 32, best of 3) with the
# deepcore it imports; run it alternately with two builds on PYTHONPATH to compare revisions.
import time, sys, numpy as np
import deepcore as dc
rng = np.random.default_rng(0)
X = rng.random((20000, 784), dtype=np.float32); y = rng.integers(0, 10, 20000)
dc.set_random_seed(0)
m = dc.Sequential([dc.Input(shape=[784]), dc.Dense(300, activation="relu"), dc.Dense(100, activation="relu"), dc.Dense(10, activation="softmax")])
m.compile(optimizer=dc.optimizers.SGD(0.01, momentum=0.9, nesterov=True), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
m.fit(X[:2048], y[:2048], batch_size=32, epochs=1, verbose=0)
best = 1e9
for _ in range(3):
    t0 = time.perf_counter(); m.fit(X, y, batch_size=32, epochs=1, verbose=0); best = min(best, time.perf_counter() - t0)
print(best)
