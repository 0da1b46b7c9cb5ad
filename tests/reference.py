"""Independent, deliberately naive references for the tests: plain loops and math.

Nothing here imports swclip's maths; a bug there cannot hide in its own reference.
"""

import math

R_M = 6_371_008.8


def haversine_loop_m(lat1, lon1, lat2, lon2):
    """Textbook haversine for one pair, in plain Python floats."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * R_M * math.asin(math.sqrt(min(1.0, h)))


def soft_targets_loop(latlon, sigma_m, kernel):
    """Q[i][j] by two loops, the kernel written out by hand."""
    n = len(latlon)
    k = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            d = haversine_loop_m(latlon[i][0], latlon[i][1], latlon[j][0], latlon[j][1])
            if kernel == "onehot" or sigma_m == 0:
                k[i][j] = 1.0 if d == 0 else 0.0
            elif kernel == "gaussian":
                k[i][j] = math.exp(-d * d / (2 * sigma_m * sigma_m))
            else:
                k[i][j] = math.exp(-d / sigma_m)
    return [[v / sum(row) for v in row] for row in k]


def log_softmax_row(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def soft_clip_loss_loop(sim, q, scale):
    """½[CE(S, Q) + CE(Sᵀ, Q)] with S = scale·sim, by loops over rows. sim, q: lists of lists."""
    n = len(sim)
    s = [[scale * sim[i][j] for j in range(n)] for i in range(n)]
    st = [[s[j][i] for j in range(n)] for i in range(n)]
    ce = 0.0
    for mat in (s, st):
        for i in range(n):
            lp = log_softmax_row(mat[i])
            ce -= sum(q[i][j] * lp[j] for j in range(n)) / n
    return ce / 2


def geoclip_head_reference(clip_features, mlp_state, log_scale, location_features):
    """GeoCLIP's image head and probabilities, written from the geoclip wheel's source with plain torch ops.

    geoclip 1.3.0: model/image_encoder.py L63 and L75-76 (mlp = Linear(768, 768), ReLU, Linear(768, 512) on
    the CLIP projected image embedding), model/GeoCLIP.py L153-160 (exp of the stored scale, both feature sets
    L2-normalised, logits = scale · image @ locationᵀ) and L186 (softmax over the gallery). In float64.
    clip_features (B, 768), location_features (N, 512) -> (image features (B, 512), probabilities (B, N)).
    """
    import torch

    x = clip_features.double()
    w0, b0 = mlp_state["0.weight"].double(), mlp_state["0.bias"].double()
    w2, b2 = mlp_state["2.weight"].double(), mlp_state["2.bias"].double()
    h = torch.clamp(x @ w0.T + b0, min=0.0) @ w2.T + b2
    image = h / torch.sqrt((h * h).sum(dim=1, keepdim=True))
    loc = location_features.double()
    loc = loc / torch.sqrt((loc * loc).sum(dim=1, keepdim=True))
    logits = math.exp(float(log_scale)) * (image @ loc.T)
    e = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
    return image, e / e.sum(dim=1, keepdim=True)
