"""Checks for the from-scratch track, parts 1-2 (the capstone): cross-entropy, Linear, Embedding,
RoPE in either published pairing, and a KV cache. Each misconception is a tiny re-creation of the
mistake; the check names the one whose outputs equal the learner's.

The learner's code for these parts is kept here as text (`*_CODE`): each check prints it as its
solution, and the model checks (track_model.py) print it again in front of the pieces built on it,
so every printed solution runs on its own."""
from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib import positional as ref_pos
from course_lib.device import single_thread
from .cases import Case, grade_function, randn
from .core import Mismatch, assert_unmodified, call_learner, compare, diagnose, register, snapshot
from .positional import _rope_variant

IMPORTS = "import math\n\nimport torch\nimport torch.nn as nn\n"

SOFTMAX_CODE = '''
def softmax(x, dim=-1):
    x_max = x.amax(dim=dim, keepdim=True)  # cancels in the ratio, keeps exp() from overflowing
    e = torch.exp(x - x_max)  # same shape as x; a -inf entry gives exactly 0
    return e / e.sum(dim=dim, keepdim=True)  # each slice along `dim` sums to 1
'''

CROSS_ENTROPY_CODE = '''
def cross_entropy(logits, targets, ignore_index=-100):
    V = logits.size(-1)
    logits = logits.reshape(-1, V)  # (N, V): every position is one row
    targets = targets.reshape(-1)  # (N,)
    keep = targets != ignore_index  # (N,): the positions that count
    # log sum_j exp(z_j) = m + log sum_j exp(z_j - m): with m the row max, exp() never overflows
    m = logits.amax(dim=-1, keepdim=True)  # (N, 1)
    log_sum_exp = m.squeeze(-1) + torch.log(torch.exp(logits - m).sum(dim=-1))  # (N,)
    safe_targets = torch.where(keep, targets, torch.zeros_like(targets))  # (N,): a valid index everywhere
    target_logit = logits.gather(-1, safe_targets[:, None]).squeeze(-1)  # (N,)
    losses = log_sum_exp - target_logit  # (N,): -log p(target) = log sum exp - z_target
    losses = torch.where(keep, losses, torch.zeros_like(losses))  # (N,): ignored positions add nothing
    return losses.sum() / keep.sum()  # 0-d: the mean over the positions that count
'''

LINEAR_CODE = '''
class Linear(nn.Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's: U(-1/sqrt(in), 1/sqrt(in))
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))  # (out, in)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))  # (out,)
        else:
            self.bias = None

    def forward(self, x):
        y = x @ self.weight.T  # (..., in) @ (in, out) -> (..., out)
        if self.bias is not None:
            y = y + self.bias  # (out,) broadcasts over the leading axes
        return y
'''

EMBEDDING_CODE = '''
class Embedding(nn.Module):
    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_embeddings, embedding_dim))  # (V, C), N(0, 1)

    def forward(self, ids):
        return self.weight[ids]  # ids (B, T) -> (B, T, C): row ids[b, t] of the table
'''

ROPE_CODE = '''
def apply_rope(x, positions, base=10000.0):
    D = x.size(-1)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # the angles' precision
    inv_freq = base ** (-torch.arange(0, D, 2, dtype=dtype, device=x.device) / D)  # (D/2,): theta_i = base^(-2i/D)
    angles = positions.to(x.device, dtype)[:, None] * inv_freq  # (T, D/2): position m times theta_i
    angles = torch.cat([angles, angles], dim=-1)  # (T, D): feature j and j + D/2 share an angle
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)  # (T, D) each
    x1, x2 = x[..., : D // 2], x[..., D // 2:]  # (B, H, T, D/2) each: the two members of every pair
    rotated = torch.cat([-x2, x1], dim=-1)  # (B, H, T, D): each pair turned by 90 degrees
    return x * cos + rotated * sin  # (B, H, T, D): each pair turned by its angle
'''

KV_CACHE_CODE = '''
class KVCache:
    def __init__(self, window=None):
        self.window = window  # None keeps every token; an int keeps only the last `window`
        self.k = None  # (B, H_kv, T_cached, D)
        self.v = None  # (B, H_kv, T_cached, D)
        self.pos = 0  # tokens seen so far = the position of the next token

    def update(self, k, v):
        T_new = k.size(2)
        if self.k is not None:
            k = torch.cat([self.k, k], dim=2)  # (B, H_kv, T_cached + T_new, D): old first, then new
            v = torch.cat([self.v, v], dim=2)  # (B, H_kv, T_cached + T_new, D)
        self.pos += T_new
        if self.window is None:
            self.k, self.v = k, v
        else:  # a rolling cache: keep only the last `window` positions for later calls
            self.k, self.v = k[:, :, -self.window:], v[:, :, -self.window:]  # (B, H_kv, <= window, D)
        return k, v  # everything the new queries may need, even beyond the window
'''


def isolated(body):
    """Run a check's body on one thread and give the notebook back its own random state."""
    @functools.wraps(body)
    def wrapper(learner):
        with torch.random.fork_rng(), single_thread():
            return body(learner)
    return wrapper


def solution_text(*pieces: str) -> str:
    """A printed solution: the imports, then the pieces in order (earlier parts first)."""
    return IMPORTS + "".join("\n" + p for p in pieces)


def instantiate(cls, what: str, *args) -> nn.Module:
    if not isinstance(cls, type):
        raise Mismatch(f"pass the class itself ({what}), not {type(cls).__name__}")
    m = call_learner(cls, *args)
    if not isinstance(m, nn.Module):
        raise Mismatch(f"{what} should subclass torch.nn.Module (class {what}(nn.Module): ...)")
    return m


# ------------------------------------------------------------------ cross-entropy
def _ce_variant(logits, targets, ignore_index=-100, *, kind):
    V = logits.size(-1)
    z, t = logits.reshape(-1, V).double(), targets.reshape(-1)  # (N, V), (N,)
    keep = t != ignore_index
    zt = z.gather(-1, torch.where(keep, t, 0)[:, None]).squeeze(-1)
    m = z.amax(-1, keepdim=True)
    if kind == "unstable":
        lse = torch.log(torch.exp(z.to(logits.dtype)).sum(-1)).double()
    elif kind == "max_not_added_back":
        lse = torch.log(torch.exp(z - m).sum(-1))
    else:
        lse = m.squeeze(-1) + torch.log(torch.exp(z - m).sum(-1))
    losses = lse - zt
    if kind == "log_of_softmax":
        p = torch.exp(z - m) / torch.exp(z - m).sum(-1, keepdim=True)
        losses = -torch.log(p.to(logits.dtype).gather(-1, torch.where(keep, t, 0)[:, None]).squeeze(-1)).double()
    losses = torch.where(keep, losses, torch.zeros_like(losses))
    if kind == "sign_flipped":
        losses = -losses
    total = losses.sum()
    if kind == "sum_not_mean":
        return total.to(logits.dtype)
    if kind == "mean_counts_ignored":
        return (total / t.numel()).to(logits.dtype)
    return (total / keep.sum()).to(logits.dtype)


def _ce_reference(logits, targets, ignore_index=-100):
    V = logits.size(-1)
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=ignore_index)  # (N, V) vs (N,)


CROSS_ENTROPY_MISCONCEPTIONS = {
    "unstable": "exp() of large logits overflows (exp(1000) = inf). Subtract each row's max m first and "
                "add it back: log Σ exp(z) = m + log Σ exp(z - m).",
    "log_of_softmax": "log(softmax(z)) loses the tiny probabilities: exp underflows to 0 and log(0) = -inf "
                      "for a target far below the max. Compute log p = z - logsumexp(z) instead, never log of a "
                      "probability.",
    "max_not_added_back": "after subtracting the row max m inside the exp, m is not added back: log Σ exp(z) "
                          "= m + log Σ exp(z - m).",
    "sum_not_mean": "the losses are summed; F.cross_entropy averages them over the positions that count.",
    "mean_counts_ignored": "the ignored positions (target == ignore_index) are counted in the mean; divide by "
                           "the number of positions that are NOT ignored.",
    "sign_flipped": "the sign is flipped: the loss is -log p(target), a positive number.",
    "mutates_input": "the logits were changed in place (e.g. `logits -= max`); compute new tensors instead.",
}


@register("check_cross_entropy", points=3, minutes=20, reference=solution_text(CROSS_ENTROPY_CODE),
          misconceptions=CROSS_ENTROPY_MISCONCEPTIONS,
          forbid=("torch.nn.functional.cross_entropy", "torch.nn.functional.nll_loss",
                  "torch.nn.functional.log_softmax", "torch.log_softmax", "torch.Tensor.log_softmax",
                  "torch.special.log_softmax", "torch.logsumexp", "torch.Tensor.logsumexp",
                  "torch.special.logsumexp", "torch.nn.CrossEntropyLoss", "torch.nn.NLLLoss", "course_lib"),
          hint="Flatten to (N, V) and (N,). The loss of one row is log Σ_j exp(z_j) - z_target; compute the "
               "log-sum-exp with the row max subtracted inside the exp and added back outside. Average only "
               "over the rows whose target is not ignore_index.",
          idea="m = logits.amax(-1, keepdim=True); lse = m.squeeze(-1) + torch.log(torch.exp(logits - m).sum(-1)) "
               "(N,). The target's logit: logits.gather(-1, targets[:, None]).squeeze(-1), with ignored targets "
               "replaced by 0 first (torch.where) so the index is valid. keep = targets != ignore_index; return "
               "((lse - target_logit) * keep).sum() / keep.sum(). No .item(): the result must stay a tensor so "
               "gradients flow.")
@isolated
def check_cross_entropy(learner):
    g = torch.Generator().manual_seed(19)
    t2 = torch.randint(0, 11, (2, 7), generator=g)
    t2[0, 5:], t2[1, 0] = -100, -100  # padding at the end of row 0, one ignored token in row 1
    wide = randn(4, 6, gen=g) * 100
    t3 = torch.randint(1, 6, (3, 4), generator=g)
    t3[1, :2] = 0
    cases = [
        Case("logits (6, 5), targets (6,)", (randn(6, 5, gen=g) * 2, torch.randint(0, 5, (6,), generator=g))),
        Case("logits (B, T, V) = (2, 7, 11) with ignored targets (-100)", (randn(2, 7, 11, gen=g) * 2, t2)),
        Case("logits (4, 9) float64", (randn(4, 9, gen=g, dtype=torch.float64) * 3,
                                       torch.randint(0, 9, (4,), generator=g))),
        Case("large logits (about 1000 each)", (randn(5, 8, gen=g) + 1000, torch.randint(0, 8, (5,), generator=g))),
        Case("logits spread over hundreds, targets on the smallest logit", (wide, wide.argmin(-1))),
        Case("logits (3, 4, 6), ignore_index=0", (randn(3, 4, 6, gen=g), t3), {"ignore_index": 0}),
    ]
    variants = {k: (lambda *a, k=k, **kw: _ce_variant(*a, **kw, kind=k))
                for k in CROSS_ENTROPY_MISCONCEPTIONS if k != "mutates_input"}
    n = grade_function(learner, cases, _ce_reference, variants, ("logits", "targets"))
    for case in cases:  # the gradient too: it is what training uses
        logits = case.args[0].clone().requires_grad_(True)
        loss = call_learner(learner, logits, *case.args[1:], **case.kwargs)
        if not loss.requires_grad:
            raise Mismatch("the loss carries no gradient to the logits (no .item(), .detach(), .data or "
                           "torch.no_grad() inside)", f"case: {case.label}")
        (grad,) = call_learner(torch.autograd.grad, loss, logits, allow_unused=True)
        expected = case.args[0].clone().requires_grad_(True)
        (want,) = torch.autograd.grad(_ce_reference(expected, *case.args[1:], **case.kwargs), expected)
        if grad is None:
            raise Mismatch("the loss does not depend on the logits through autograd", f"case: {case.label}")
        try:
            compare(grad, want, "the gradient d loss / d logits")
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {case.label}") from None
    return n


# ------------------------------------------------------------------ Linear and Embedding
def _parameter(m: nn.Module, name: str, shape: tuple, what: str, transposed_key: str | None = None):
    p = getattr(m, name, None)
    if isinstance(p, torch.Tensor) and not isinstance(p, nn.Parameter):
        raise Mismatch(f"`{name}` is a plain tensor, so {what}.parameters() misses it and no optimizer "
                       "would train it", misconception="plain_tensor")
    if not isinstance(p, nn.Parameter):
        raise Mismatch(f"{what} has no nn.Parameter called `{name}`")
    if transposed_key and tuple(p.shape) == shape[::-1] and shape[0] != shape[1]:
        raise Mismatch(f"`{name}` has shape {tuple(p.shape)}, expected {shape}", misconception=transposed_key)
    if tuple(p.shape) != shape:
        raise Mismatch(f"`{name}` has shape {tuple(p.shape)}, expected {shape}")
    return p


def _uniform_init(w: torch.Tensor, bound: float, label: str, wrong_bound: float | None = None) -> None:
    """w should look like a draw of U(-bound, bound)."""
    w = w.detach().double()
    a, std, mean = w.abs().max().item(), w.std().item(), w.mean().item()
    if a == 0:
        raise Mismatch(f"{label} is all zeros: every output unit starts identical and gets the same "
                       "gradient, so they never become different", misconception="zero_init")
    if w.min().item() >= 0:
        raise Mismatch(f"{label} has no negative values (min {w.min().item():.3g}): torch.rand draws from "
                       "[0, 1); centre it: U(-b, b) = (2 * torch.rand(...) - 1) * b", misconception="not_centred")
    if a > bound * (1 + 1e-6) and abs(std - 1.0) < 0.05:
        raise Mismatch(f"{label} looks like torch.randn (std {std:.3f}); nn.Linear draws uniformly from "
                       f"±1/sqrt(in_features) = ±{bound:.4f}", misconception="randn_init")
    if wrong_bound and abs(std * math.sqrt(3) / wrong_bound - 1) < 0.2 * abs(wrong_bound / bound - 1):
        raise Mismatch(f"{label} is spread over ±{wrong_bound:.4f} = ±1/sqrt(out_features); the bound is "
                       f"1/sqrt(in_features) = {bound:.4f}", misconception="bound_from_out_features")
    n = w.numel()  # six standard errors of a uniform draw's mean and std: a correct init never fails
    mean_tol, std_tol = 6 * bound / math.sqrt(3 * n), 6 * math.sqrt(0.8 / (4 * n))
    if a > bound * (1 + 1e-6) or a < 0.9 * bound or abs(mean) > mean_tol or abs(std * math.sqrt(3) / bound - 1) > std_tol:
        raise Mismatch(f"{label} does not look like U(-{bound:.4f}, {bound:.4f}) = U(-1/sqrt(in), 1/sqrt(in)) "
                       f"(max |w| {a:.4f}, mean {mean:.2g}, std {std:.4f}; a uniform draw has std "
                       f"bound/sqrt(3) = {bound / math.sqrt(3):.4f})")


LINEAR_MISCONCEPTIONS = {
    "transposed_weight": "the weight is stored as (in_features, out_features). nn.Linear stores (out, in) and "
                         "computes x @ W.T, so checkpoints and the other parts of the track load into it.",
    "plain_tensor": "a weight or bias is a plain tensor: wrap it in nn.Parameter so model.parameters() (and "
                    "the optimizer) see it.",
    "bias_flag_ignored": "bias=False still creates a bias; with bias=False set self.bias = None.",
    "zero_init": "the weight starts at zero; draw it from U(-1/sqrt(in), 1/sqrt(in)).",
    "not_centred": "the weight is drawn from [0, b) instead of (-b, b).",
    "randn_init": "the weight is drawn from a normal N(0, 1); nn.Linear draws U(-1/sqrt(in), 1/sqrt(in)).",
    "bound_from_out_features": "the init bound uses out_features; it is 1/sqrt(in_features) (the fan-in).",
    "bias_not_added": "forward never adds the bias.",
    "mutates_input": "forward changed its input x in place.",
}


@register("check_linear", points=2, minutes=15, reference=solution_text(LINEAR_CODE),
          misconceptions=LINEAR_MISCONCEPTIONS,
          forbid=("torch.nn.Linear", "torch.nn.LazyLinear", "torch.nn.functional.linear", "torch.addmm",
                  "torch.nn.init.kaiming_uniform_", "course_lib"),
          hint="weight: nn.Parameter of shape (out_features, in_features); bias: (out_features,) or None. "
               "Both start uniform in ±1/sqrt(in_features). forward is x @ weight.T + bias.",
          idea="bound = 1 / math.sqrt(in_features); self.weight = nn.Parameter(torch.empty(out_features, "
               "in_features).uniform_(-bound, bound)); the bias likewise with shape (out_features,) when bias "
               "is True, else self.bias = None. forward: y = x @ self.weight.T, then y + self.bias if there is one.")
@isolated
def check_linear(learner):
    torch.manual_seed(0)
    big = instantiate(learner, "Linear", 512, 256)
    w = _parameter(big, "weight", (256, 512), "Linear", "transposed_weight")
    b = _parameter(big, "bias", (256,), "Linear")
    _uniform_init(w, 1 / math.sqrt(512), "the initial weight", wrong_bound=1 / math.sqrt(256))
    if b.detach().abs().max() > 0:  # zeros (GPT-2's choice) or nn.Linear's uniform draw are both fine
        _uniform_init(b, 1 / math.sqrt(512), "the initial bias", wrong_bound=1 / math.sqrt(256))
    no_bias = instantiate(learner, "Linear", 6, 3, False)
    if getattr(no_bias, "bias", None) is not None:
        raise Mismatch("Linear(6, 3, bias=False) has a bias", misconception="bias_flag_ignored")
    g = torch.Generator().manual_seed(20)
    cases = []
    for label, (i, o, bias, dtype, shape) in {
            "Linear(7, 5), x (3, 7)": (7, 5, True, torch.float32, (3, 7)),
            "Linear(7, 5), x (2, 4, 7)": (7, 5, True, torch.float32, (2, 4, 7)),
            "Linear(6, 3, bias=False), x (2, 6)": (6, 3, False, torch.float32, (2, 6)),
            "Linear(5, 4) in float64, x (3, 2, 5)": (5, 4, True, torch.float64, (3, 2, 5))}.items():
        m = instantiate(learner, "Linear", i, o, bias)
        with torch.no_grad():
            _parameter(m, "weight", (o, i), "Linear", "transposed_weight").copy_(randn(o, i, gen=g))
            if bias:
                _parameter(m, "bias", (o,), "Linear").copy_(randn(o, gen=g))
        cases.append(Case(label, (randn(*shape, gen=g, dtype=dtype),), {"_m": m.to(dtype)}))

    def reference(x, _m):
        return F.linear(x, _m.weight.detach(), None if _m.bias is None else _m.bias.detach())

    variants = {"bias_not_added": lambda x, _m: F.linear(x, _m.weight.detach())}
    n = grade_function(lambda x, _m: _m(x), cases, reference, variants, ("x",))
    x = randn(3, 7, gen=g)
    call_learner(lambda: cases[0].kwargs["_m"](x).sum().backward())
    if cases[0].kwargs["_m"].weight.grad is None:
        raise Mismatch("after loss.backward() the weight has no gradient: use self.weight itself in forward "
                       "(not .data or .detach())")
    return n + 2


EMBEDDING_MISCONCEPTIONS = {
    "transposed_weight": "the table is stored as (embedding_dim, num_embeddings); nn.Embedding stores one row "
                         "per id: (num_embeddings, embedding_dim).",
    "plain_tensor": "the table is a plain tensor: wrap it in nn.Parameter so the optimizer trains it.",
    "uniform_init": "the table is drawn uniformly; nn.Embedding (and this exercise) draws N(0, 1): torch.randn.",
    "scaled_init": "the table is drawn from a normal with a small std (GPT-2 uses 0.02 for its whole model). "
                   "This exercise asks for nn.Embedding's N(0, 1); the LLaMA of part 3 re-initialises its "
                   "weights itself.",
}


@register("check_embedding", points=1, minutes=10, reference=solution_text(EMBEDDING_CODE),
          misconceptions=EMBEDDING_MISCONCEPTIONS,
          forbid=("torch.nn.Embedding", "torch.nn.EmbeddingBag", "torch.nn.functional.embedding",
                  "torch.embedding", "course_lib"),
          hint="weight: an nn.Parameter of shape (num_embeddings, embedding_dim) drawn from N(0, 1). forward "
               "picks rows: ids of any shape (B, T) give (B, T, embedding_dim).",
          idea="self.weight = nn.Parameter(torch.randn(num_embeddings, embedding_dim)); forward returns "
               "self.weight[ids] (indexing with a tensor of ids keeps the ids' shape and adds the row axis).")
@isolated
def check_embedding(learner):
    torch.manual_seed(0)
    big = instantiate(learner, "Embedding", 512, 256)
    w = _parameter(big, "weight", (512, 256), "Embedding", "transposed_weight").detach().double()
    std, mean = w.std().item(), w.mean().item()
    tails = ((w - mean).abs() > 2 * std).double().mean().item()  # a normal: 4.6 % beyond 2 std; a uniform: none
    if tails < 0.02 or w.min().item() >= 0:
        raise Mismatch(f"the initial table has {tails:.1%} of its values beyond 2 standard deviations (a normal "
                       f"has 4.6 %) and min {w.min().item():.3g}", misconception="uniform_init")
    if std < 0.5:
        raise Mismatch(f"the initial table has std {std:.3g}, expected 1", misconception="scaled_init")
    if abs(std - 1) > 0.05 or abs(mean) > 0.05:
        raise Mismatch(f"the initial table has mean {mean:.3g} and std {std:.3g}; expected N(0, 1)")
    g = torch.Generator().manual_seed(21)
    m = instantiate(learner, "Embedding", 13, 6)
    with torch.no_grad():
        _parameter(m, "weight", (13, 6), "Embedding", "transposed_weight").copy_(randn(13, 6, gen=g))
    cases = [Case("ids (2, 5)", (torch.randint(0, 13, (2, 5), generator=g),)),
             Case("ids (7,) with repeats and the last id 12", (torch.tensor([0, 12, 3, 3, 12, 5, 0]),)),
             Case("ids (3, 1, 4)", (torch.randint(0, 13, (3, 1, 4), generator=g),))]
    n = grade_function(lambda ids: m(ids), cases, lambda ids: F.embedding(ids, m.weight.detach()), {}, ("ids",))
    call_learner(lambda: m(cases[0].args[0]).sum().backward())
    if m.weight.grad is None or not m.weight.grad.abs().sum() > 0:
        raise Mismatch("after loss.backward() the table has no gradient: index self.weight itself in forward")
    return n + 1


# ------------------------------------------------------------------ RoPE, either pairing
LAYOUT_NAMES = {"half": "half-split pairs (j, j + D/2), as Hugging Face LLaMA",
                "adjacent": "adjacent pairs (2i, 2i + 1), as RoFormer, GPT-J and Meta's LLaMA"}

ROPE_MISCONCEPTIONS = {
    "mixed_layout": "the features are paired one way (half-split or adjacent) but the cos/sin table is laid "
                    "out for the other. Half-split pairs need torch.cat([angles, angles], -1); adjacent pairs "
                    "need angles.repeat_interleave(2, -1).",
    "ignores_positions": "the rotation uses torch.arange(T) instead of the `positions` you were given, so a KV "
                         "cache continuing at position 10 would rotate its keys as if they came first.",
    "negative_rotation": "the rotation goes the wrong way (by -m·θ): rotating (x1, x2) by +m·θ gives "
                         "(x1 cos - x2 sin, x1 sin + x2 cos).",
    "exponent_i_over_d": "the frequencies use base^(-i/D) with i the pair index; RoPE's are base^(-2i/D): "
                         "base ** (-torch.arange(0, D, 2) / D).",
    "ignores_base": "the base is fixed at 10000 and the `base` argument is ignored (LLaMA 3 uses 500000).",
    "mutates_input": "the input x was changed in place; build a new tensor instead.",
}


def rope_reference(layout: str):
    def reference(x, positions, base=10000.0):
        return ref_pos.apply_rope(x, positions, base, layout=layout)
    return reference


@register("check_rope", points=3, minutes=20, reference=solution_text(ROPE_CODE),
          misconceptions=ROPE_MISCONCEPTIONS, forbid=("course_lib", "transformers"),
          hint="Pair up the D features of each head, turn each pair by the angle position × θ_i with θ_i = "
               "base^(-2i/D). Either pairing is fine: half-split (j with j + D/2, Hugging Face) or adjacent "
               "(2i with 2i + 1, the RoFormer paper). positions is (T,); x is (B, H, T, D).",
          idea="inv_freq = base ** (-torch.arange(0, D, 2) / D) (D/2 entries); angles = positions[:, None] * "
               "inv_freq is (T, D/2). Half-split: angles = torch.cat([angles, angles], -1), rotate_half(x) = "
               "torch.cat([-x2, x1], -1) with x1, x2 the two halves; return x * cos + rotate_half(x) * sin.")
@isolated
def check_rope(learner):
    g = torch.Generator().manual_seed(22)
    cases = [
        Case("x (1, 1, 4, 2), positions arange(4)", (randn(1, 1, 4, 2, gen=g), torch.arange(4))),
        Case("x (2, 3, 6, 8), positions arange(6)", (randn(2, 3, 6, 8, gen=g), torch.arange(6))),
        Case("x (2, 2, 5, 16), positions arange(10, 15) (as after 10 cached tokens)",
             (randn(2, 2, 5, 16, gen=g), torch.arange(10, 15))),
        Case("x (1, 2, 4, 8) float64, positions [3, 0, 7, 1]",
             (randn(1, 2, 4, 8, gen=g, dtype=torch.float64), torch.tensor([3, 0, 7, 1]))),
        Case("x (1, 2, 5, 32), positions arange(3, 8), base=500000.0",
             (randn(1, 2, 5, 32, gen=g), torch.arange(3, 8)), {"base": 500000.0}),
    ]
    return grade_either_layout(learner, cases)


def grade_either_layout(learner, cases) -> int:
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    outs = []
    for case in cases:
        before = snapshot(case.args)
        outs.append(call_learner(learner, *case.args, **case.kwargs))
        try:
            assert_unmodified(case.args, before, ("x", "positions"))
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {case.label}", "mutates_input") from None
    failures = {}
    for layout in ("half", "adjacent"):
        ref = rope_reference(layout)
        for case, out in zip(cases, outs):
            try:
                compare(out, ref(*case.args, **case.kwargs))
            except Mismatch as mm:
                failures[layout] = (case, mm)
                break
        else:
            return len(cases)
    case, mm = failures["half"]
    refs = [rope_reference("half")(*c.args, **c.kwargs) for c in cases]
    runs = {}
    for layout in ("half", "adjacent"):
        other = "adjacent" if layout == "half" else "half"
        knobs = {"mixed_layout": dict(pairs=layout, freqs=other),
                 "ignores_positions": dict(ignore_positions=True), "negative_rotation": dict(sign=-1.0),
                 "exponent_i_over_d": dict(exponent="i"), "ignores_base": dict(ignore_theta=True)}
        for key, kw in knobs.items():
            kw = {"pairs": layout, "freqs": layout, **kw}
            runs[f"{key}/{layout}"] = (lambda kw=kw: [_rope_variant(*c.args, c.kwargs.get("base", 10000.0), **kw)
                                                      for c in cases])
    key = diagnose(outs, runs, refs)
    raise Mismatch(f"{mm.reason} (compared with both pairings)",
                   f"case: {case.label}; compared with {LAYOUT_NAMES['half']}, and with {LAYOUT_NAMES['adjacent']}",
                   key.split("/")[0] if key else None)


# ------------------------------------------------------------------ KV cache
class ReferenceCache:
    """The cache protocol the track's Attention relies on, written by the grader (used to grade the
    learner's Attention, Block and LLaMA independently of their own KVCache). `kind` re-creates a
    misconception."""

    def __init__(self, window=None, kind=None):
        self.window, self.kind, self.k, self.v, self.pos, self.calls = window, kind, None, None, 0, 0

    def update(self, k, v):
        T_new = k.size(2)
        if self.kind == "returns_only_new":
            k_all, v_all = k, v
            k_keep = k if self.k is None else torch.cat([self.k, k], 2)
            v_keep = v if self.v is None else torch.cat([self.v, v], 2)
        else:
            if self.k is None:
                k_all, v_all = k, v
            elif self.kind == "new_before_stored":
                k_all, v_all = torch.cat([k, self.k], 2), torch.cat([v, self.v], 2)
            else:
                k_all, v_all = torch.cat([self.k, k], 2), torch.cat([self.v, v], 2)
            k_keep, v_keep = k_all, v_all
        self.pos += 1 if self.kind == "pos_counts_updates" else T_new
        self.calls += 1
        if self.window is not None and self.kind != "window_ignored":
            k_keep, v_keep = k_keep[:, :, -self.window:], v_keep[:, :, -self.window:]
            if self.kind == "trims_before_returning":
                k_all, v_all = k_keep, v_keep
        self.k, self.v = k_keep, v_keep
        return k_all, v_all


KV_CACHE_MISCONCEPTIONS = {
    "returns_only_new": "update returns only the new keys and values; it must return the cached ones followed "
                        "by the new ones, so each new query sees every earlier token.",
    "new_before_stored": "the new keys come before the cached ones; concatenate in time order: "
                         "torch.cat([self.k, k], dim=2).",
    "pos_counts_updates": "pos counts calls to update (+1 each), not tokens: a prefill of 5 tokens must move "
                          "pos by 5 (pos += k.size(2)).",
    "window_ignored": "with window set, the cache still keeps every token; keep only the last `window` "
                      "positions (k[:, :, -window:]) for the next call.",
    "trims_before_returning": "the window is applied to what update returns: when 5 new tokens arrive with "
                              "window=4, the first new query still needs the keys before it. Return everything "
                              "(cached + new), then store only the last `window`.",
    "shared_state": "two KVCache objects share their storage (a list created at class level, or a mutable "
                    "default argument): create the storage in __init__ (self.k = None).",
}


def _kv_steps(g):
    def kv(T):
        return randn(2, 2, T, 4, gen=g), randn(2, 2, T, 4, gen=g)
    return [("no window", None, [kv(T) for T in (3, 1, 1, 2)]),
            ("window=4", 4, [kv(T) for T in (3, 1, 1, 2, 5, 1)])]


def _kv_trace(make, scenarios) -> list:
    trace = []
    for _, window, steps in scenarios:
        cache = make(window)
        for k, v in steps:
            k_all, v_all = cache.update(k.clone(), v.clone())
            trace += [_detached(k_all), _detached(v_all), torch.tensor(float(cache.pos))]
    return trace


def _detached(t):
    return t.detach().clone() if isinstance(t, torch.Tensor) else t


@register("check_kv_cache", points=3, minutes=20, reference=solution_text(KV_CACHE_CODE),
          misconceptions=KV_CACHE_MISCONCEPTIONS, forbid=("course_lib", "transformers"),
          hint="update(k, v) concatenates the stored keys/values with the new ones along the time axis (dim 2), "
               "remembers the result (only its last `window` positions when window is set), adds the number of "
               "new tokens to pos, and returns the concatenation.",
          idea="In __init__: self.k = self.v = None; self.pos = 0. In update: if self.k is not None: k = "
               "torch.cat([self.k, k], dim=2) (same for v); self.pos += number of new tokens; store k (or "
               "k[:, :, -window:] when window is set) as self.k; return the full k, v.")
@isolated
def check_kv_cache(learner):
    if not isinstance(learner, type):
        raise Mismatch(f"pass the class itself (KVCache), not {type(learner).__name__}")
    g = torch.Generator().manual_seed(23)
    first = call_learner(learner)
    if getattr(first, "pos", None) != 0:
        raise Mismatch(f"a new KVCache() should have pos == 0, got {getattr(first, 'pos', 'no attribute pos')!r}")
    a, b = randn(1, 2, 3, 4, gen=g), randn(1, 2, 2, 4, gen=g)
    call_learner(first.update, a, a)
    second = call_learner(learner)
    k2 = call_learner(second.update, b, b)
    k2 = k2[0] if isinstance(k2, tuple) else k2
    if isinstance(k2, torch.Tensor) and k2.shape != b.shape and k2.numel() > b.numel():
        raise Mismatch("a fresh KVCache returned keys stored by another KVCache", misconception="shared_state")
    scenarios = _kv_steps(g)
    outs = []
    for label, window, steps in scenarios:
        cache = call_learner(learner, window)
        for i, (k, v) in enumerate(steps):
            before = snapshot((k, v))
            out = call_learner(cache.update, k, v)
            assert_unmodified((k, v), before, ("k", "v"))
            if not (isinstance(out, tuple) and len(out) == 2):
                raise Mismatch(f"update should return a tuple (k_all, v_all), got {type(out).__name__}",
                               f"{label}, update {i + 1}")
            outs += [_detached(out[0]), _detached(out[1]), torch.tensor(float(getattr(cache, "pos", -1)))]
    refs = _kv_trace(lambda w: ReferenceCache(w), scenarios)
    names = [f"{what} after update {i + 1} ({label}, {steps[i][0].size(2)} new tokens)"
             for label, _, steps in scenarios for i in range(len(steps)) for what in ("k_all", "v_all", "pos")]
    for name, out, ref in zip(names, outs, refs):
        try:
            if name.startswith("pos") and isinstance(out, torch.Tensor) and out.item() != ref.item():
                raise Mismatch(f"pos is {out.item():g}, expected {ref.item():g}")
            compare(out, ref, name.split(" ")[0])
        except Mismatch as mm:
            runs = {k: (lambda k=k: _kv_trace(lambda w: ReferenceCache(w, k), scenarios))
                    for k in KV_CACHE_MISCONCEPTIONS if k != "shared_state"}
            key = diagnose(outs, runs, refs)
            raise Mismatch(mm.reason, f"case: {name}", key) from None
    return len(names) + 1
