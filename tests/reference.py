"""An independent, straightforward MLL-SGD (Algorithm 1) in numpy float64.

Written from the paper's formulas for multinomial logistic regression; shares
with the library only the data, the partition, the initial model and the
random draws (``clients.step_schedule``).
"""

import numpy as np

from flwr_multilevel.clients import step_schedule


def logreg_gradient(w, bias, x, y, num_classes):
    """Gradient of the mean cross-entropy of softmax(x w^T + bias)."""
    logits = x @ w.T + bias
    logits -= logits.max(axis=1, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(axis=1, keepdims=True)
    prob[np.arange(len(y)), y] -= 1.0
    prob /= len(y)
    return prob.T @ x, prob.sum(axis=0)


def algorithm_1(
    *,
    x_parts,
    y_parts,
    hub_of,
    weights,
    rates,
    mixing,
    w0,
    b0,
    tau,
    q,
    rounds,
    lr,
    batch_size,
    seed,
    num_classes=10,
):
    """Return the hub models (w, bias) after ``rounds`` rounds of Algorithm 1."""
    num_hubs = mixing.shape[0]
    hub_of = np.asarray(hub_of)
    weights = np.asarray(weights, dtype=np.float64)
    v = weights / np.array([weights[hub_of == hub_of[i]].sum() for i in range(len(weights))])
    hubs = [(w0.copy(), b0.copy()) for _ in range(num_hubs)]
    for r in range(1, rounds + 1):
        z = [(np.zeros_like(w0), np.zeros_like(b0)) for _ in range(num_hubs)]
        for i in range(len(weights)):
            w, b = (a.copy() for a in hubs[hub_of[i]])  # x_i <- y_d(i)
            sched = step_schedule(seed, r, i, tau, rates[i], len(y_parts[i]), batch_size)
            for take, batch in zip(sched.coins, sched.batches, strict=False):
                if take:  # with probability p_i
                    gw, gb = logreg_gradient(
                        w, b, x_parts[i][batch], y_parts[i][batch], num_classes
                    )
                    w, b = w - lr * gw, b - lr * gb
            z[hub_of[i]][0][...] += v[i] * w  # z_d = sum v_i x_i
            z[hub_of[i]][1][...] += v[i] * b
        if r % q == 0:  # y_d = sum_j H[j, d] z_j
            hubs = [
                (
                    sum(mixing[j, d] * z[j][0] for j in range(num_hubs)),
                    sum(mixing[j, d] * z[j][1] for j in range(num_hubs)),
                )
                for d in range(num_hubs)
            ]
        else:
            hubs = z
    return hubs
