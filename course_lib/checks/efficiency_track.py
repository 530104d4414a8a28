"""Checks for exercise 15's from-scratch parts: a Linear layer that stores int8 weights
(`QuantLinear`), per-group quantisation (`quantize_per_group`) and Mixture-of-Depths routing
(`mod_route`). The references are course_lib's (quantization.py, mod.py); each misconception is
a small re-creation of the mistake, named when the learner's output equals it on every case."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib import quantization as ref_quant
from course_lib.mod import MoDBlock, top_k_indices
from .cases import Case, grade_function, randn
from .core import Mismatch, call_learner, compare, register
from .efficiency import _matches
from .track_tensors import isolated

QUANT_FORBID = ("torch.ao", "torch.quantize_per_channel", "torch.quantize_per_tensor",
                "torch.fake_quantize_per_channel_affine", "torch.fake_quantize_per_tensor_affine", "course_lib")

# ------------------------------------------------------------------ QuantLinear
QUANT_LINEAR_CODE = '''import torch
import torch.nn as nn


def quantize_per_channel(w):
    absmax = w.abs().amax(dim=1)  # (out,): the largest magnitude in each row
    scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))  # (out,); an all-zero row gets 1
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (out, in)
    return q, scale


class QuantLinear(nn.Module):
    def __init__(self, linear):
        super().__init__()
        q, scale = quantize_per_channel(linear.weight.detach())  # (out, in) int8, (out,) float
        self.register_buffer("weight_int8", q)  # buffers: saved by state_dict, moved by .to(device)
        self.register_buffer("scale", scale)
        if linear.bias is None:
            self.bias = None
        else:
            self.register_buffer("bias", linear.bias.detach().clone())  # (out,)

    def forward(self, x):
        w_hat = self.weight_int8.to(x.dtype) * self.scale[:, None].to(x.dtype)  # (out, in): q times its row's scale
        y = x @ w_hat.T  # (..., in) @ (in, out) -> (..., out)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)  # (out,) broadcasts over the leading axes
        return y
'''

QUANT_LINEAR_MISCONCEPTIONS = {
    "stores_float_weight": "the module still holds a float copy of the weight (e.g. self.linear = linear, or "
                           "self.weight = linear.weight), so it saves no memory. Keep only the int8 matrix and "
                           "the scales; rebuild the float weight inside forward.",
    "not_int8": "the quantised weight is stored as a float tensor holding whole numbers; store it as "
                "torch.int8 (1 byte per weight instead of 4): .to(torch.int8) after rounding and clamping.",
    "not_buffers": "the int8 weight or the scales are plain attributes, so state_dict() does not save them and "
                   ".to(device) does not move them. Use self.register_buffer('weight_int8', q) (buffers, not "
                   "nn.Parameter: an int8 tensor cannot have a gradient).",
    "scale_per_column": "the scale is one per input column (amax over dim=0). A Linear weight is (out, in); "
                        "per-channel means one scale per output row: amax over dim=1, applied as scale[:, None].",
    "uses_float_weight": "forward gives exactly the float layer's output: it multiplies by the original float "
                         "weight, not by the dequantised one q · scale.",
    "scale_not_applied": "forward multiplies by the int8 values q without multiplying by the scale: "
                         "ŵ = q · scale[:, None].",
    "forgot_bias": "forward never adds the bias of the original layer.",
    "mutates_input": "building the QuantLinear changed the float layer's weight in place.",
}


def _dequant_reference(linear: nn.Linear):
    q, scale = ref_quant.quantize_per_channel(linear.weight.detach())
    return ref_quant.dequantize(q, scale)  # (out, in)


def _state_problem(m: nn.Module, out_f: int, in_f: int, dtype: torch.dtype) -> None:
    state = call_learner(m.state_dict)
    floats = [k for k, t in state.items() if t.is_floating_point() and t.numel() >= out_f * in_f]
    whole = [k for k in floats if tuple(state[k].shape) == (out_f, in_f)
             and torch.equal(state[k], state[k].round()) and state[k].abs().max() <= 127]
    if whole and len(whole) == len(floats):
        raise Mismatch(f"the quantised weight `{whole[0]}` has dtype {state[whole[0]].dtype}, expected torch.int8",
                       misconception="not_int8")
    if floats:
        raise Mismatch(f"state_dict() holds a float tensor as large as the weight ({floats[0]})",
                       misconception="stores_float_weight")
    int8 = [t for t in state.values() if t.dtype == torch.int8 and tuple(t.shape) == (out_f, in_f)]
    if not int8:
        attrs = [v for v in vars(m).values() if isinstance(v, torch.Tensor) and tuple(v.shape) == (out_f, in_f)]
        wholes = [t for t in state.values() if tuple(t.shape) == (out_f, in_f)]
        if wholes or any(a.is_floating_point() for a in attrs):
            raise Mismatch(f"no int8 (out, in) = ({out_f}, {in_f}) tensor in state_dict()", misconception="not_int8")
        raise Mismatch(f"no int8 (out, in) = ({out_f}, {in_f}) tensor in state_dict()", misconception="not_buffers")
    scales = [t for t in state.values() if t.is_floating_point() and t.dim() == 1]
    if any(t.numel() == in_f for t in scales) and in_f != out_f and not any(t.numel() == out_f for t in scales):
        raise Mismatch(f"the scale has {in_f} entries (one per input column); expected {out_f}, one per output row",
                       misconception="scale_per_column")


@register("check_quant_linear", points=3, minutes=25, reference=QUANT_LINEAR_CODE,
          misconceptions=QUANT_LINEAR_MISCONCEPTIONS, forbid=QUANT_FORBID,
          hint="In __init__, quantise linear.weight per output row (your quantize_per_channel) and keep only q "
               "(int8) and the scales, as buffers; keep the bias too. forward rebuilds ŵ = q · scale and "
               "computes x @ ŵᵀ + b.",
          idea="q, scale = quantize_per_channel(linear.weight.detach()); self.register_buffer('weight_int8', q); "
               "self.register_buffer('scale', scale); the bias likewise (or None). forward: w_hat = "
               "self.weight_int8.to(x.dtype) * self.scale[:, None]  (out, in); return x @ w_hat.T + self.bias. "
               "Never keep `linear` itself: its float weight would be saved with the module.")
@isolated
def check_quant_linear(learner):
    if not isinstance(learner, type):
        raise Mismatch(f"pass the class itself (QuantLinear), not {type(learner).__name__}")
    g = torch.Generator().manual_seed(151)
    cases, n_checked = [], 0
    for label, (i, o, bias, dtype, shape) in {
            "QuantLinear(nn.Linear(7, 5)), x (3, 7)": (7, 5, True, torch.float32, (3, 7)),
            "QuantLinear(nn.Linear(12, 6)), x (2, 4, 12)": (12, 6, True, torch.float32, (2, 4, 12)),
            "QuantLinear(nn.Linear(6, 9, bias=False)), x (4, 6)": (6, 9, False, torch.float32, (4, 6)),
            "QuantLinear(nn.Linear(5, 4)) in float64, x (2, 3, 5)": (5, 4, True, torch.float64, (2, 3, 5))}.items():
        lin = nn.Linear(i, o, bias=bias).to(dtype)
        with torch.no_grad():
            lin.weight.copy_(randn(o, i, gen=g, dtype=dtype) * torch.exp(randn(o, 1, gen=g, dtype=dtype)))
            if bias:
                lin.bias.copy_(randn(o, gen=g, dtype=dtype))
        before = lin.weight.detach().clone()
        m = call_learner(learner, lin)
        if not torch.equal(lin.weight.detach(), before):
            raise Mismatch("building the QuantLinear changed the float layer's weight", f"case: {label}",
                           "mutates_input")
        if not isinstance(m, nn.Module):
            raise Mismatch("QuantLinear should subclass torch.nn.Module (class QuantLinear(nn.Module): ...)")
        try:
            _state_problem(m, o, i, dtype)
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {label}", mm.misconception) from None
        n_checked += 1
        cases.append(Case(label, (randn(*shape, gen=g, dtype=dtype),), {"_m": m, "_lin": lin}))

    def reference(x, _m, _lin):
        return F.linear(x, _dequant_reference(_lin), None if _lin.bias is None else _lin.bias.detach())

    def per_column(x, _m, _lin):
        w = _lin.weight.detach()
        absmax = w.abs().amax(dim=0)  # (in,)
        scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))
        w_hat = torch.round(w / scale).clamp(-127, 127) * scale
        return F.linear(x, w_hat, None if _lin.bias is None else _lin.bias.detach())

    def plain(x, _m, _lin, weight=None, bias=True):
        w = _dequant_reference(_lin) if weight is None else weight
        return F.linear(x, w, _lin.bias.detach() if bias and _lin.bias is not None else None)

    variants = {
        "scale_per_column": per_column,
        "uses_float_weight": lambda x, _m, _lin: plain(x, _m, _lin, weight=_lin.weight.detach()),
        "scale_not_applied": lambda x, _m, _lin: plain(
            x, _m, _lin, weight=ref_quant.quantize_per_channel(_lin.weight.detach())[0].to(x.dtype)),
        "forgot_bias": lambda x, _m, _lin: plain(x, _m, _lin, bias=False),
    }
    n = grade_function(lambda x, _m, _lin: _m(x), cases, reference, variants, ("x",))
    return n + n_checked


# ------------------------------------------------------------------ per-group quantisation
def quantize_per_group_reference(w: torch.Tensor, group_size: int):
    """w (out, in) -> (q (out, in) int8, scale (out, in // group_size)): one absmax scale per group of
    `group_size` consecutive input columns of a row, i.e. per-channel quantisation of the rows of
    w.reshape(out · n_groups, group_size)."""
    out_f, in_f = w.shape
    q, scale = ref_quant.quantize_per_channel(w.reshape(-1, group_size))  # (out·G, gs), (out·G,)
    return q.reshape(out_f, in_f), scale.reshape(out_f, in_f // group_size)  # (out, in) int8, (out, G) scales


QUANT_GROUP_CODE = '''import torch


def quantize_per_group(w, group_size):
    out_features, in_features = w.shape
    n_groups = in_features // group_size
    groups = w.reshape(out_features, n_groups, group_size)  # (out, G, gs): consecutive columns of one row
    absmax = groups.abs().amax(dim=-1)  # (out, G): the largest magnitude in each group
    scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))  # (out, G); an all-zero group gets 1
    q = torch.round(groups / scale[..., None]).clamp(-127, 127).to(torch.int8)  # (out, G, gs)
    return q.reshape(out_features, in_features), scale  # (out, in), (out, G)
'''

QUANT_GROUP_MISCONCEPTIONS = {
    "row_absmax": "every group of a row gets the row's absmax: that is per-channel quantisation with the scale "
                  "repeated. Take the max over each group of group_size columns only: "
                  "w.reshape(out, n_groups, group_size).abs().amax(dim=-1).",
    "strided_groups": "the groups are every n_groups-th column (w.reshape(out, group_size, n_groups), max over "
                      "dim=1) instead of group_size *consecutive* columns: reshape to (out, n_groups, group_size) "
                      "and take the max over the last axis.",
    "groups_down_columns": "the groups run down a column (group_size consecutive output rows) instead of along a "
                           "row. A group is group_size consecutive input columns of ONE row: scale has shape "
                           "(out, in // group_size).",
    "zero_group": "an all-zero group gets scale 0 and 0 / 0 = NaN; give it a positive scale (1 is fine).",
    "float_dtype": "q holds the right integers but as a float tensor; store it as torch.int8.",
    "mutates_input": "the weight passed in was changed in place.",
}


def _group_cases(g: torch.Generator) -> list[Case]:
    def w(out_f, in_f, gs, spread=1.0, dtype=torch.float32):
        x = torch.randn(out_f, in_f, generator=g, dtype=dtype)
        return x * torch.exp(spread * torch.randn(out_f, in_f // gs, generator=g, dtype=dtype)).repeat_interleave(gs, 1)

    outlier = w(4, 12, 4)
    outlier[1, 5] = 40.0  # one huge weight: only its own group should be coarse
    zero = w(4, 8, 2)
    zero[2, 2:4] = 0.0  # an all-zero group
    return [Case("w (4, 8), group_size 4", (w(4, 8, 4), 4)),
            Case("w (4, 12), group_size 4, one weight 40 in row 1", (outlier, 4)),
            Case("w (8, 16), group_size 8", (w(8, 16, 8, 1.5), 8)),
            Case("w (4, 8), group_size 2, an all-zero group in row 2", (zero, 2)),
            Case("w (6, 6), group_size 6 (one group per row)", (w(6, 6, 6), 6)),
            Case("w (6, 12) float64, group_size 3", (w(6, 12, 3, 1.0, torch.float64), 3))]


def _group_variant_quotients(w: torch.Tensor, gs: int) -> dict[str, torch.Tensor | None]:
    """Each misconception's w / scale in float64, before rounding (None where it cannot apply)."""
    w = w.double()
    out_f, in_f = w.shape
    n_groups = in_f // gs
    row = w.abs().amax(dim=1, keepdim=True)  # (out, 1)
    strided = w.reshape(out_f, gs, n_groups).abs().amax(dim=1, keepdim=True).expand(out_f, gs, n_groups)  # (out, gs, G): max over every G-th column
    down = None
    if out_f % gs == 0:
        down = w.reshape(out_f // gs, gs, in_f).abs().amax(dim=1, keepdim=True).expand(out_f // gs, gs, in_f)  # (out/gs, gs, in): max down groups of rows
        down = w / down.reshape(out_f, in_f) * 127  # (out, in)
    return {"row_absmax": w / row * 127, "strided_groups": w / strided.reshape(out_f, in_f) * 127,  # each (out, in)
            "groups_down_columns": down}


def _check_group_answer(out, w: torch.Tensor, gs: int) -> None:
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        got = "None (did you forget a `return`?)" if out is None else type(out).__name__
        raise Mismatch(f"return a pair (q, scale); got {got}")
    q, scale = out
    ref_q, ref_scale = quantize_per_group_reference(w, gs)
    if not isinstance(q, torch.Tensor) or not isinstance(scale, torch.Tensor):
        raise Mismatch(f"q and scale should be tensors, got {type(q).__name__} and {type(scale).__name__}")
    if q.shape != w.shape:
        raise Mismatch(f"q has shape {tuple(q.shape)}, expected {tuple(w.shape)} (one integer per weight)")
    if q.dtype != torch.int8:
        raise Mismatch(f"q has dtype {q.dtype}, expected torch.int8")
    u = (w.double().reshape(-1, gs) / ref_scale.double().reshape(-1, 1)).reshape(w.shape)  # (out·G, gs) -> (out, in)
    if not _matches(q, u, "round", torch.ones_like(u, dtype=torch.bool)):
        n = int((q.to(torch.int64) != ref_q.to(torch.int64)).sum())
        raise Mismatch(f"q differs from the reference in {n} of {q.numel()} entries")
    if scale.shape != ref_scale.shape:
        raise Mismatch(f"scale has shape {tuple(scale.shape)}, expected {tuple(ref_scale.shape)} = (out, in // "
                       "group_size): one scale per group")
    if scale.dtype != w.dtype:
        raise Mismatch(f"scale has dtype {scale.dtype}, expected {w.dtype} (the weight's own dtype)")
    zero = w.reshape(ref_scale.shape + (gs,)).abs().amax(dim=-1) == 0  # (out, G): all-zero groups
    if not (torch.isfinite(scale[zero]) & (scale[zero] > 0)).all():
        raise Mismatch(f"the scale of an all-zero group is {scale[zero].tolist()}; expected a positive number")
    compare(torch.where(zero, ref_scale, scale), ref_scale, "scale")


def _diagnose_group(outs: list, cases: list[Case]) -> str | None:
    qs = [o[0] if isinstance(o, (tuple, list)) and len(o) == 2 else None for o in outs]
    if not all(isinstance(q, torch.Tensor) and q.shape == c.args[0].shape for q, c in zip(qs, cases)):
        return None
    for key in ("row_absmax", "strided_groups", "groups_down_columns"):
        hits = []
        for q, c in zip(qs, cases):
            u = _group_variant_quotients(*c.args)[key]
            if u is None:
                continue
            ref_q = quantize_per_group_reference(*c.args)[0]
            hits.append((_matches(q, u, "round", torch.isfinite(u)), _matches(ref_q, u, "round", torch.isfinite(u))))
        if hits and all(h for h, _ in hits) and not all(r for _, r in hits):
            return key
    for o, q, c in zip(outs, qs, cases):
        w, gs = c.args
        if (w.reshape(-1, gs).abs().amax(dim=1) == 0).any():  # (out·G, gs): one row per group
            s = o[1]
            if not torch.isfinite(q.double()).all() or (isinstance(s, torch.Tensor) and not (torch.isfinite(s) & (s > 0)).all()):
                return "zero_group"
    if any(q.is_floating_point() for q in qs):
        return "float_dtype"
    return None


@register("check_quantize_per_group", points=3, minutes=20, reference=QUANT_GROUP_CODE,
          misconceptions=QUANT_GROUP_MISCONCEPTIONS, forbid=QUANT_FORBID,
          hint="Cut each row into groups of group_size consecutive columns; every group gets its own absmax / 127. "
               "A reshape to (out, n_groups, group_size) puts each group on the last axis.",
          idea="groups = w.reshape(out, in // group_size, group_size); absmax = groups.abs().amax(-1) (out, G); "
               "scale = absmax / 127 (1 where absmax is 0); q = round(groups / scale[..., None]).clamp(-127, 127)"
               ".to(torch.int8).reshape(out, in). Return (q, scale) with scale of shape (out, G).")
@isolated
def check_quantize_per_group(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    cases = _group_cases(torch.Generator().manual_seed(152))
    outs = []
    for case in cases:
        before = case.args[0].clone()
        outs.append(call_learner(learner, *case.args))
        if not torch.equal(case.args[0], before):
            raise Mismatch("your code changed the weight `w` in place; compute new tensors instead",
                           f"case: {case.label}", "mutates_input")
    for case, out in zip(cases, outs):
        try:
            _check_group_answer(out, *case.args)
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {case.label}", _diagnose_group(outs, cases)) from None
    return len(cases)


# ------------------------------------------------------------------ Mixture-of-Depths routing
MOD_ROUTE_CODE = '''import torch


def mod_route(x, scores, k, block):
    B, T, C = x.shape
    idx = scores.topk(k, dim=-1).indices  # (B, k): the k best tokens of each sequence, best first
    idx = idx.sort(dim=-1).values  # (B, k): back in sequence order, so causal attention stays causal
    idx_c = idx[:, :, None].expand(B, k, C)  # (B, k, C): the same index for every channel
    x_sel = x.gather(1, idx_c)  # (B, k, C): the chosen tokens alone
    update = block(x_sel) - x_sel  # (B, k, C): what the block adds to the residual stream
    gate = torch.sigmoid(scores.gather(1, idx))  # (B, k): puts the router on the gradient path
    return x.scatter(1, idx_c, x_sel + gate[:, :, None] * update)  # (B, T, C): other tokens unchanged
'''

MOD_ROUTE_MISCONCEPTIONS = {
    "score_order": "the chosen tokens go through the block in score order (topk returns the best first). Sort "
                   "the indices by position (idx.sort(dim=-1).values) so a causal block sees them in sequence order.",
    "block_sees_all_tokens": "the block runs on the whole sequence and only the chosen positions are kept: the "
                             "chosen tokens then attend to tokens that were not chosen. Gather the k tokens first "
                             "and run the block on those alone.",
    "no_gate": "the block's update is not multiplied by the router's gate, so top-k is a hard choice with no "
               "gradient to the router: x_sel + sigmoid(r) · (block(x_sel) - x_sel).",
    "gate_on_output": "the gate multiplies the block's whole output, residual included (g · block(x_sel)); it "
                      "multiplies only what the block adds: x_sel + g · (block(x_sel) - x_sel).",
    "gate_detached": "the gate is cut off from autograd (.detach(), .item() or torch.no_grad()), so the scores "
                     "get no gradient and the router never learns which tokens need the block.",
    "mutates_input": "x was changed in place (x[...] = ..., .scatter_); build a new tensor with .scatter or "
                     "torch.where.",
}


class _Wrapped(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, **kwargs):
        return self.fn(x)


def _mod_reference(x, scores, k, block, gate="sigmoid"):
    C = x.size(-1)
    mod = MoDBlock(_Wrapped(block), C, capacity=1.0, gate=gate)  # the library's gather -> block -> scatter
    return mod._process(x, top_k_indices(scores, k), scores, None, {})  # (B, T, C)


def _mod_variant(x, scores, k, block, *, kind):
    B, T, C = x.shape
    idx = scores.topk(k, dim=-1).indices
    if kind != "score_order":
        idx = idx.sort(dim=-1).values
    idx_c = idx[:, :, None].expand(B, k, C)
    x_sel = x.gather(1, idx_c)
    if kind == "block_sees_all_tokens":
        new = block(x).gather(1, idx_c)
    else:
        new = block(x_sel)
    g = torch.sigmoid(scores.gather(1, idx))[:, :, None]
    out = {"no_gate": new, "gate_on_output": g * new}.get(kind, x_sel + g * (new - x_sel))
    return x.scatter(1, idx_c, out)


def _causal_block(C: int, dtype: torch.dtype, seed: int):
    """A residual block (B, n, C) -> (B, n, C) in which each token reads the mean of the tokens up to it:
    its output depends on which tokens it sees and in what order, as causal attention's does."""
    W = torch.randn(C, C, generator=torch.Generator().manual_seed(seed), dtype=dtype)  # (C, C)

    def block(h):
        n = h.size(1)
        counts = torch.arange(1, n + 1, dtype=h.dtype, device=h.device)[:, None]  # (n, 1)
        return h + torch.tanh((h.cumsum(1) / counts) @ W.to(h.dtype))  # (B, n, C)
    return block


@register("check_mod_route", points=3, minutes=30, reference=MOD_ROUTE_CODE,
          misconceptions=MOD_ROUTE_MISCONCEPTIONS, forbid=("course_lib",),
          hint="Pick the k highest scores of each sequence, keep them in sequence order, gather those tokens, "
               "run the block on them alone, and scatter x_sel + sigmoid(r) · (block(x_sel) - x_sel) back; "
               "every other token stays exactly as it was.",
          idea="idx = scores.topk(k, -1).indices.sort(-1).values (B, k); idx_c = idx[..., None].expand(B, k, C); "
               "x_sel = x.gather(1, idx_c); update = block(x_sel) - x_sel; g = torch.sigmoid(scores.gather(1, idx)); "
               "return x.scatter(1, idx_c, x_sel + g[..., None] * update). (The paper multiplies by r itself; "
               "that is accepted too.)")
@isolated
def check_mod_route(learner):
    g = torch.Generator().manual_seed(153)
    cases = []
    for label, (B, T, C, k, dtype) in {
            "x (2, 8, 4), k = 3": (2, 8, 4, 3, torch.float32),
            "x (3, 10, 6), k = 5": (3, 10, 6, 5, torch.float32),
            "x (2, 6, 4), k = 6 (every token)": (2, 6, 4, 6, torch.float32),
            "x (4, 5, 3), k = 1": (4, 5, 3, 1, torch.float32),
            "x (2, 9, 5) float64, k = 4": (2, 9, 5, 4, torch.float64)}.items():
        cases.append(Case(label, (randn(B, T, C, gen=g, dtype=dtype), randn(B, T, gen=g, dtype=dtype) * 2, k,
                                  _causal_block(C, dtype, len(cases)))))
    variants = {key: (lambda *a, key=key: _mod_variant(*a, kind=key))
                for key in MOD_ROUTE_MISCONCEPTIONS if key not in ("mutates_input", "gate_detached")}
    note = ""
    try:
        n = grade_function(learner, cases, _mod_reference, variants, ("x", "scores"))
    except Mismatch as first:
        try:  # the paper's own gate, r itself, is a published convention: accept it
            n = grade_function(learner, cases, lambda *a: _mod_reference(*a, gate="raw"), {}, ("x", "scores"))
        except Mismatch:
            raise first from None
        note = "with the paper's gate r; the course uses sigmoid(r)"
    # the gate is what trains the router: the scores must receive a gradient
    x, scores, k, block = cases[0].args
    scores = scores.clone().requires_grad_(True)
    out = call_learner(learner, x, scores, k, block)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        raise Mismatch("the output carries no gradient to the scores (no .detach() or torch.no_grad() on the "
                       "gate): the router learns only through it", f"case: {cases[0].label}", "gate_detached")
    (grad,) = call_learner(torch.autograd.grad, out.sum(), scores, allow_unused=True)
    if grad is None or not grad.abs().sum() > 0:
        raise Mismatch("the scores get no gradient from the output", f"case: {cases[0].label}", "gate_detached")
    return (n + 1, note) if note else n + 1
