"""Central finite differences in float64, shared by the gradient tests."""
import numpy as np


def central_difference(f, a, h=1e-6):
    """Gradient of the scalar function f at a (float64), one element at a time."""
    a = np.array(a, np.float64)
    g = np.zeros_like(a)
    for i in range(a.size):
        old = a.flat[i]
        a.flat[i] = old + h
        fp = f(a)
        a.flat[i] = old - h
        fm = f(a)
        a.flat[i] = old
        g.flat[i] = (fp - fm) / (2 * h)
    return g
