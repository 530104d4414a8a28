"""Checks for exercise 14's parallel parts: the linear recurrence h_t = a_t·h_{t-1} + b_t as a
log-depth associative scan (`parallel_scan`), its backward pass as a scan backwards in time
(`ScanFunction`), the two-level scan over chunks (`chunked_scan`), Mamba's exact zero-order-hold
discretisation of B (`discretize_zoh`), and the selective scan built from them (`selective_scan_zoh`).

The references are independent of the exercise's method: the scan is compared with the plain
loop over time, and the discretisation with the matrix exponential of the augmented matrix
[[ΔA, ΔB], [0, 0]] (`torch.linalg.matrix_exp`, in float64), whose top-right entry is the exact
zero-order-hold B̄. That the scan does not loop over time is measured by counting the torch
operations it runs at T = 256 and T = 4096: a log-depth scan needs a few more, a loop 16 times
as many. Each misconception is a small re-creation of the mistake; the check names the one
whose outputs equal the learner's on every case."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .cases import Case, grade_function, randn
from .core import Mismatch, assert_unmodified, call_learner, compare, diagnose, register, snapshot
from .track_tensors import isolated

FORBID = ("course_lib.ssm", "course_lib.checks")
ZOH_FORBID = ("torch.linalg.matrix_exp", "torch.matrix_exp", "torch.Tensor.matrix_exp", *FORBID)

PARALLEL_SCAN_CODE = '''
def parallel_scan(a, b):
    T = b.size(1)
    if T == 1:
        return b  # h_0 = a_0·0 + b_0
    if T % 2:  # pad one identity step (h -> 1·h + 0) so that the steps pair up
        a = torch.cat([a, torch.ones_like(a[:, :1])], dim=1)  # (B, T+1, ...)
        b = torch.cat([b, torch.zeros_like(b[:, :1])], dim=1)  # (B, T+1, ...)
    a_even, a_odd = a[:, 0::2], a[:, 1::2]  # (B, T'/2, ...) steps 0, 2, 4, ... and 1, 3, 5, ...
    b_even, b_odd = b[:, 0::2], b[:, 1::2]
    # step 2k then step 2k+1 is one affine map: h -> a_odd·(a_even·h + b_even) + b_odd
    h_odd = parallel_scan(a_even * a_odd, a_odd * b_even + b_odd)  # (B, T'/2, ...) h_1, h_3, h_5, ...
    h_before = torch.cat([torch.zeros_like(h_odd[:, :1]), h_odd[:, :-1]], dim=1)  # h_-1 = 0, h_1, h_3, ...
    h_even = a_even * h_before + b_even  # (B, T'/2, ...) h_0, h_2, h_4, ...
    h = torch.stack([h_even, h_odd], dim=2).flatten(1, 2)  # (B, T'/2, 2, ...) -> (B, T', ...) interleaved
    return h[:, :T]  # drop the padding step
'''

CHUNKED_SCAN_CODE = '''
def chunked_scan(a, b, chunk):
    Bsz, T, rest = b.size(0), b.size(1), b.shape[2:]
    pad = -T % chunk  # identity steps (1, 0) that fill the last chunk
    if pad:
        a = torch.cat([a, torch.ones_like(a[:, :1]).expand(-1, pad, *rest)], dim=1)  # (B, T + pad, ...)
        b = torch.cat([b, torch.zeros_like(b[:, :1]).expand(-1, pad, *rest)], dim=1)  # (B, T + pad, ...)
    K = a.size(1) // chunk
    a_c = a.reshape(Bsz * K, chunk, *rest)  # (B·K, L, ...): every chunk a sequence of its own
    b_c = b.reshape(Bsz * K, chunk, *rest)
    h_local = parallel_scan(a_c, b_c).reshape(Bsz, K, chunk, *rest)  # (B, K, L, ...) each chunk from h = 0
    decay = torch.cumprod(a_c, dim=1).reshape(Bsz, K, chunk, *rest)  # (B, K, L, ...) a_first···a_t in its chunk
    h_end = parallel_scan(decay[:, :, -1], h_local[:, :, -1])  # (B, K, ...) the true state at each chunk's end
    h_start = torch.cat([torch.zeros_like(h_end[:, :1]), h_end[:, :-1]], dim=1)  # (B, K, ...) entering each chunk
    h = h_local + decay * h_start.unsqueeze(2)  # (B, K, L, ...)
    return h.reshape(Bsz, K * chunk, *rest)[:, :T]  # (B, T, ...) without the padding
'''

DISCRETIZE_ZOH_CODE = '''
def discretize_zoh(delta, A, B):
    dA = delta.unsqueeze(-1) * A  # (B, T, E, 1) * (E, N) -> (B, T, E, N)
    dB = delta.unsqueeze(-1) * B.unsqueeze(2)  # (B, T, E, 1) * (B, T, 1, N) -> (B, T, E, N)
    # (exp(ΔA) - 1) / ΔA -> 1 as ΔA -> 0; expm1 keeps the digits that exp(ΔA) - 1 would cancel
    safe = torch.where(dA == 0, torch.ones_like(dA), dA)  # no 0/0, not even in the branch not taken
    ratio = torch.where(dA == 0, torch.ones_like(dA), torch.expm1(safe) / safe)  # (B, T, E, N)
    return torch.exp(dA), ratio * dB
'''

SCAN_FUNCTION_CODE = '''
class ScanFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        h = parallel_scan(a, b)  # (B, T, ...)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        a, h = ctx.saved_tensors
        # g_t = dL/dh_t counts h_t's own gradient and what it passes on through h_{t+1} = a_{t+1}·h_t + b_{t+1}:
        # g_t = grad_h_t + a_{t+1}·g_{t+1}, the same recurrence run backwards in time
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)  # (B, T, ...) a_{t+1}, 0 after the end
        g = parallel_scan(a_next.flip(1), grad_h.flip(1)).flip(1)  # (B, T, ...)
        h_before = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)  # (B, T, ...) h_{t-1}, h_{-1} = 0
        return g * h_before, g  # dL/da_t = g_t·h_{t-1}, dL/db_t = g_t
'''

SELECTIVE_SCAN_ZOH_CODE = '''
def selective_scan_zoh(x, delta, A, B, C, D):
    A_bar, B_bar = discretize_zoh(delta, A, B)  # (B, T, E, N) each
    h = ScanFunction.apply(A_bar, B_bar * x.unsqueeze(-1))  # (B, T, E, N): every state at once
    return (h * C.unsqueeze(2)).sum(-1) + D * x  # (B, T, E): C_t · h_t over the N states, plus the skip
'''

IMPORTS = "import torch\n"


def solution_text(*pieces: str) -> str:
    """A printed solution: the imports, then the pieces in order (earlier parts first)."""
    return IMPORTS + "".join("\n" + p for p in pieces)


# ------------------------------------------------------------------ counting the operations of a run
class _CountOps(TorchFunctionMode):
    """Counts the torch functions and Tensor methods (indexing and arithmetic included) a call runs."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def _op_counts(fn, make_args, lengths=(256, 4096), direct=False) -> list[int]:
    """The torch operations one call runs at each length (`direct`: fn calls the learner's code itself)."""
    counts = []
    for T in lengths:
        args = make_args(T)
        counter = _CountOps()
        with counter:
            fn(*args) if direct else call_learner(fn, *args)
        counts.append(counter.calls)
    return counts


LOOP_FACTOR = 3  # T grows 16 times; a log-depth scan runs 12/8 = 1.5 times the operations, a loop 16 times


def _assert_log_depth(fn, make_args, what: str, direct: bool = False) -> None:
    short, long = _op_counts(fn, make_args, direct=direct)
    if long > LOOP_FACTOR * max(short, 1):
        raise Mismatch(f"{what} ran {short:,} torch operations at T = 256 and {long:,} at T = 4096",
                       "a log-depth scan needs only a few more operations for a 16 times longer sequence",
                       "loops_over_time")


# ------------------------------------------------------------------ part 2: the parallel scan
def scan_reference(a, b):
    """h_t = a_t·h_{t-1} + b_t with h_{-1} = 0, one step at a time: the definition."""
    h = torch.zeros_like(b[:, 0])  # (B, ...)
    states = []
    for t in range(b.size(1)):
        h = a[:, t] * h + b[:, t]  # (B, ...)
        states.append(h)
    return torch.stack(states, dim=1)  # (B, T, ...)


def _hillis_steele(a, b, *, kind=""):
    """Hillis & Steele's scan with one of the misconceptions (kind) built in."""
    T = b.size(1)
    n_steps = int(math.log2(T)) if kind == "too_few_steps" else math.ceil(math.log2(T)) if T > 1 else 0
    s = 1
    for _ in range(n_steps):
        a_prev = torch.cat([torch.ones_like(a[:, :s]), a[:, :-s]], dim=1)  # (B, T, ...)
        b_prev = torch.cat([torch.zeros_like(b[:, :s]), b[:, :-s]], dim=1)  # (B, T, ...)
        if kind == "wrong_combine_order":
            b = a_prev * b + b_prev  # (a1·b2 + b1): the later map applied first
        else:
            b = a * b_prev + b
        if kind != "a_not_composed":
            a = a * a_prev
        s *= 2
    if kind == "exclusive":
        return torch.cat([torch.zeros_like(b[:, :1]), b[:, :-1]], dim=1)  # (B, T, ...) h_{t-1}
    return b


def _cumprod_division(a, b):
    P = torch.cumprod(a, dim=1)  # (B, T, ...) a_0·a_1···a_t
    return P * torch.cumsum(b / P, dim=1)  # (B, T, ...)


SCAN_MISCONCEPTIONS = {
    "wrong_combine_order": "the pairs were composed in the wrong order. (a1, b1) then (a2, b2) is h -> a2·(a1·h + b1) "
                           "+ b2 = (a1·a2, a2·b1 + b2): the later step's a multiplies the earlier step's b, not "
                           "a1·b2 + b1.",
    "too_few_steps": "the scan stopped one round short when T is not a power of two: int(log2(T)) rounds down. "
                     "Keep combining while the offset is below T (ceil(log2 T) rounds), or pad T up.",
    "a_not_composed": "only b was combined; the a's must be composed too (a1·a2), or the next round multiplies by "
                      "a single step's a instead of the product over the span it covers.",
    "exclusive": "the states came out one step late (h_{t-1} at position t, 0 first): Blelloch's down-sweep gives "
                 "an exclusive scan. The recurrence asks for h_t = a_t·h_{t-1} + b_t at position t (inclusive): "
                 "combine each exclusive prefix with its own step once more.",
    "cumprod_division": "h_t = P_t·Σ b_s/P_s with P = cumprod(a) is the same sum on paper, but P_t underflows on long "
                        "sequences (a < 1 multiplied thousands of times is 0) and b/P becomes inf or NaN. Compose "
                        "pairs instead, so that every number stays the size of a state.",
    "loops_over_time": "your scan loops over the T time steps (or over chunks of them) in Python. A parallel scan "
                       "does about log2(T) rounds of whole-tensor operations: combine steps in pairs, then pairs of "
                       "pairs, and so on.",
    "mutates_input": "an input tensor (a or b) was changed in place; compute new tensors instead.",
}


def _scan_args(g, shape, dtype=torch.float32):
    a = torch.rand(*shape, generator=g, dtype=dtype) * 0.5 + 0.5  # (B, T, ...) in (0.5, 1): a decaying state
    return a, randn(*shape, gen=g, dtype=dtype)


def _scan_cases(g) -> list[Case]:
    cases = []
    for shape, dtype in [((2, 1, 3), torch.float32), ((1, 2, 4), torch.float32), ((2, 5, 3, 2), torch.float32),
                         ((3, 13), torch.float64), ((2, 64, 4, 3), torch.float32), ((1, 100, 2, 5), torch.float64),
                         ((1, 4096, 2), torch.float32)]:
        what = "float64" if dtype == torch.float64 else "float32"
        cases.append(Case(f"a, b {shape}: T = {shape[1]}, {what}", _scan_args(g, shape, dtype)))
    return cases


@register("check_parallel_scan", points=3, minutes=35, reference=solution_text(PARALLEL_SCAN_CODE),
          misconceptions=SCAN_MISCONCEPTIONS, forbid=FORBID,
          hint="A step is an affine map h -> a·h + b, and doing two maps one after the other is again one. "
               "Which pair (a, b) is 'step 1 then step 2'? Combine neighbours, then neighbouring pairs, ...",
          idea="(a1, b1) then (a2, b2) = (a1·a2, a2·b1 + b2). Hillis-Steele: for s = 1, 2, 4, ... < T, combine every "
               "position with the one s earlier (identity (1, 0) before the start). Or recursively: combine steps "
               "(2k, 2k+1), scan the T/2 pairs (that gives the odd states), then h_2k = a_2k·h_2k-1 + b_2k; pad an "
               "identity step when T is odd.")
@isolated
def check_parallel_scan(learner):
    cases = _scan_cases(torch.Generator().manual_seed(141))
    variants = {k: (lambda a, b, k=k: _hillis_steele(a, b, kind=k))
                for k in ("wrong_combine_order", "too_few_steps", "a_not_composed", "exclusive")}
    variants["cumprod_division"] = _cumprod_division
    n = grade_function(learner, cases, scan_reference, variants, ("a", "b"))
    g = torch.Generator().manual_seed(142)
    _assert_log_depth(learner, lambda T: _scan_args(g, (1, T, 2)), "your scan")
    return n


# ------------------------------------------------------------------ part 3: the scan's backward pass
def _scan_backward_variant(a, b, grad_h, *, kind=""):
    """(dL/da, dL/db) for h = scan(a, b) and an upstream gradient grad_h, with a misconception built in."""
    h = scan_reference(a, b)  # (B, T, ...)
    coef = a if kind == "unshifted_a" else torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)
    if kind == "not_reversed":
        g = scan_reference(coef, grad_h)  # run forwards in time
    elif kind == "no_accumulation":
        g = grad_h
    else:
        g = scan_reference(coef.flip(1), grad_h.flip(1)).flip(1)  # (B, T, ...)
    h_before = h if kind == "h_not_shifted" else torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
    return g * h_before, g


SCAN_BACKWARD_MISCONCEPTIONS = {
    "unshifted_a": "the backward recurrence used a_t where it needs a_{t+1}: h_t reaches the loss through "
                   "h_{t+1} = a_{t+1}·h_t + b_{t+1}, so g_t = grad_h_t + a_{t+1}·g_{t+1} (shift a one step left "
                   "before flipping).",
    "h_not_shifted": "dL/da_t multiplies g_t by h_t; a_t multiplies the *previous* state, so dL/da_t = g_t·h_{t-1} "
                     "(with h_{-1} = 0).",
    "not_reversed": "the gradient recurrence ran forwards in time. Gradients flow from later states to earlier "
                    "ones: flip the time axis, scan, and flip back.",
    "no_accumulation": "dL/db_t = grad_h_t misses what h_t passes on to every later state: "
                       "g_t = grad_h_t + a_{t+1}·g_{t+1} accumulates it.",
    "not_a_function": "pass the class itself, a subclass of torch.autograd.Function with static forward(ctx, a, b) "
                      "and backward(ctx, grad_h) methods; the check calls ScanFunction.apply(a, b).",
    "loops_over_time": "your backward pass loops over the T time steps in Python; it is a scan too (run backwards "
                       "in time), so your parallel_scan does it in log-depth.",
}


def _run_scan_function(cls, a, b, grad_h):
    """h = cls.apply(a, b) and the gradients its backward returns for the upstream gradient grad_h."""
    a, b = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    h = call_learner(cls.apply, a, b)
    if not isinstance(h, torch.Tensor):
        compare(h, torch.empty(0), "ScanFunction.apply(a, b)")
    if h.grad_fn is None:
        raise Mismatch("ScanFunction.apply(a, b) returned a tensor without a gradient: return h from forward")
    call_learner(torch.autograd.backward, h, grad_h)
    return h.detach(), a.grad, b.grad


class _Ctx:
    """A stand-in for autograd's ctx, so that forward and backward run on this thread, where the operations
    are counted (autograd's engine runs backward where a TorchFunctionMode does not see it)."""
    needs_input_grad = (True, True)

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def __getattr__(self, name):  # mark_non_differentiable, set_materialize_grads, ...: nothing to do here
        if name.startswith("__") or name == "saved_tensors":
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def _forward_backward(cls, a, b):
    ctx = _Ctx()
    call_learner(cls.forward, ctx, a, b)
    return call_learner(cls.backward, ctx, torch.ones_like(b))


@register("check_scan_function", points=3, minutes=30,
          reference=solution_text(PARALLEL_SCAN_CODE, SCAN_FUNCTION_CODE),
          misconceptions=SCAN_BACKWARD_MISCONCEPTIONS, forbid=FORBID,
          hint="h_t reaches the loss directly and through every later state. Write dL/dh_t in terms of dL/dh_{t+1}: "
               "what kind of recurrence is it, and in which direction does it run?",
          idea="g_t = grad_h_t + a_{t+1}·g_{t+1} (g after the end is 0) is a linear recurrence backwards in time: "
               "g = parallel_scan(a_next.flip(1), grad_h.flip(1)).flip(1) with a_next = a shifted one step left "
               "(0 at the end). Then dL/db_t = g_t and dL/da_t = g_t·h_{t-1} (h_{-1} = 0); save a and h in forward.")
@isolated
def check_scan_function(learner):
    if not (isinstance(learner, type) and issubclass(learner, torch.autograd.Function)):
        raise Mismatch(f"expected a subclass of torch.autograd.Function, got {getattr(learner, '__name__', learner)!r}",
                       misconception="not_a_function")
    g = torch.Generator().manual_seed(145)
    cases = []
    for shape, dtype in [((2, 1, 3), torch.float32), ((2, 6, 3), torch.float32), ((1, 13, 2, 3), torch.float64),
                         ((2, 64, 4), torch.float32), ((1, 100, 3), torch.float64)]:
        a, b = _scan_args(g, shape, dtype)
        cases.append(Case(f"a, b, grad_h {shape}, {dtype}", (a, b, randn(*shape, gen=g, dtype=dtype))))
    refs, outs = [], []
    for case in cases:
        a, b, grad_h = case.args
        a_ref, b_ref = a.clone().requires_grad_(), b.clone().requires_grad_()
        h_ref = scan_reference(a_ref, b_ref)
        h_ref.backward(grad_h)  # autograd through the plain loop: the independent reference
        refs.append([h_ref.detach(), a_ref.grad, b_ref.grad])
        outs.append(list(_run_scan_function(learner, a, b, grad_h)))
    for case, out, ref in zip(cases, outs, refs):
        try:
            for what, o, r in zip(("ScanFunction.apply(a, b)", "the gradient of a", "the gradient of b"), out, ref):
                compare(o, r, what)
        except Mismatch as mm:
            variants = {k: (lambda k=k: [t for c in cases for t in (scan_reference(*c.args[:2]),
                                                                   *_scan_backward_variant(*c.args, kind=k))])
                        for k in ("unshifted_a", "h_not_shifted", "not_reversed", "no_accumulation")}
            key = diagnose([t for o in outs for t in o], variants, [t for r in refs for t in r])
            raise Mismatch(mm.reason, f"case: {case.label}", key) from None

    g2 = torch.Generator().manual_seed(146)
    _assert_log_depth(lambda a, b: _forward_backward(learner, a, b), lambda T: _scan_args(g2, (1, T, 2)),
                      "your ScanFunction (forward and backward)", direct=True)
    return len(cases)


# ------------------------------------------------------------------ part 4: chunks and the state passed between them
def _chunked_variant(a, b, chunk, *, kind):
    """The two-level scan with one misconception built in (written with the reference loop inside chunks)."""
    T = b.size(1)
    starts = range(0, T, chunk)
    h_local = [scan_reference(a[:, s:s + chunk], b[:, s:s + chunk]) for s in starts]  # each (B, L, ...)
    decay = [torch.cumprod(a[:, s:s + chunk], dim=1) for s in starts]
    out, h_in, true_end = [], torch.zeros_like(b[:, 0]), torch.zeros_like(b[:, 0])
    for k, (hl, dc) in enumerate(zip(h_local, decay)):
        if kind == "no_carry":
            out.append(hl)
        elif kind == "carry_not_decayed":
            out.append(hl + h_in.unsqueeze(1))
        else:  # carry_last_chunk_only: the state entering chunk k is chunk k-1's own end, from zero
            out.append(hl + dc * h_in.unsqueeze(1))
        true_end = hl[:, -1] + dc[:, -1] * true_end
        h_in = hl[:, -1] if kind == "carry_last_chunk_only" else true_end
    return torch.cat(out, dim=1)  # (B, T, ...)


CHUNKED_MISCONCEPTIONS = {
    "no_carry": "every chunk started from h = 0: the state at the end of one chunk must enter the next. Add "
                "decay·h_start, where h_start is the true state before the chunk.",
    "carry_not_decayed": "the entering state was added as it is. Inside the chunk it decays step by step: position t "
                         "adds (a_first···a_t)·h_start, the cumulative product of the chunk's a's.",
    "carry_last_chunk_only": "the state entering chunk k was chunk k-1's own end, computed from zero; it must include "
                             "everything before chunk k-1 too. Scan the chunk maps (product of a, local end state) "
                             "over the chunks.",
    "loops_over_time": "your chunked scan loops over the chunks (or the steps) in Python. Scan all chunks at once "
                       "(reshape to (B·K, L, ...)), then scan the K chunk ends with parallel_scan.",
    "mutates_input": "an input tensor (a or b) was changed in place; compute new tensors instead.",
}


@register("check_chunked_scan", points=3, minutes=30,
          reference=solution_text(PARALLEL_SCAN_CODE, CHUNKED_SCAN_CODE),
          misconceptions=CHUNKED_MISCONCEPTIONS, forbid=FORBID,
          hint="Scan every chunk as if it started from zero. What does each chunk then owe to the state that "
               "entered it, and how do you find that state for every chunk at once?",
          idea="Pad T to a multiple of chunk with (1, 0); reshape to (B·K, L, ...); h_local = parallel_scan of the "
               "chunks; decay = cumprod of a within each chunk; h_end = parallel_scan(decay[:, :, -1], "
               "h_local[:, :, -1]) over the K chunks; h_start = h_end shifted one chunk right (0 first); "
               "h = h_local + decay·h_start; drop the padding.")
@isolated
def check_chunked_scan(learner):
    g = torch.Generator().manual_seed(147)
    cases = []
    for shape, chunk, dtype in [((2, 12, 3), 4, torch.float32), ((1, 13, 2, 2), 4, torch.float32),
                                ((2, 7, 3), 1, torch.float32), ((2, 5, 2), 8, torch.float64),
                                ((1, 64, 4), 64, torch.float32), ((3, 100, 2), 7, torch.float64),
                                ((1, 1000, 3), 16, torch.float32)]:
        cases.append(Case(f"a, b {shape}, chunk={chunk}, {dtype}", (*_scan_args(g, shape, dtype), chunk)))
    variants = {k: (lambda a, b, chunk, k=k: _chunked_variant(a, b, chunk, kind=k))
                for k in ("no_carry", "carry_not_decayed", "carry_last_chunk_only")}
    n = grade_function(learner, cases, lambda a, b, chunk: scan_reference(a, b), variants, ("a", "b", "chunk"))
    _assert_log_depth(learner, lambda T: (*_scan_args(g, (1, T, 2)), 16), "your chunked scan (chunks of 16)")
    return n


# ------------------------------------------------------------------ part 5: the exact zero-order hold
def discretize_reference(delta, A, B):
    """Ā and B̄ from the matrix exponential of [[ΔA, ΔB], [0, 0]] (1×1 blocks: A is diagonal), in float64:
    exp of it is [[exp(ΔA), (ΔA)^-1 (exp(ΔA) - 1) ΔB], [0, 1]]."""
    dA = (delta.double().unsqueeze(-1) * A.double())  # (B, T, E, N)
    dB = delta.double().unsqueeze(-1) * B.double().unsqueeze(2)  # (B, T, E, N)
    M = torch.zeros(*dA.shape, 2, 2, dtype=torch.float64)  # (B, T, E, N, 2, 2)
    M[..., 0, 0], M[..., 0, 1] = dA, dB
    expM = torch.linalg.matrix_exp(M)  # (B, T, E, N, 2, 2)
    return expM[..., 0, 0].to(delta.dtype), expM[..., 0, 1].to(delta.dtype)


def _zoh_variant(delta, A, B, *, kind):
    dA = delta.unsqueeze(-1) * A  # (B, T, E, N)
    dB = delta.unsqueeze(-1) * B.unsqueeze(2)  # (B, T, E, N)
    A_bar = 1 + dA if kind == "euler_A" else torch.exp(dA)
    if kind == "euler_B":
        return A_bar, dB
    if kind == "no_division":
        return A_bar, torch.expm1(dA) * dB
    if kind == "nan_at_zero":
        return A_bar, torch.expm1(dA) / dA * dB
    if kind == "no_expm1":
        return A_bar, torch.where(dA == 0, torch.ones_like(dA), (torch.exp(dA) - 1) / dA) * dB
    safe = torch.where(dA == 0, torch.ones_like(dA), dA)
    ratio = torch.where(dA == 0, torch.ones_like(dA), torch.expm1(safe) / safe)  # (B, T, E, N)
    if kind == "extra_delta":
        return A_bar, ratio * dB * delta.unsqueeze(-1)  # (exp(ΔA) - 1)/A · ΔB: Δ counted twice
    return A_bar, ratio * dB  # euler_A: only Ā is wrong


ZOH_MISCONCEPTIONS = {
    "euler_B": "B̄ = ΔB is Mamba's simplification (the first-order term of the exact formula; what its code and "
               "part 1's scan use). It is right for part 1, but this part asks for the exact zero-order hold: "
               "B̄ = (ΔA)⁻¹(exp(ΔA) - 1)·ΔB.",
    "no_division": "exp(ΔA) - 1 was not divided by ΔA: B̄ = (exp(ΔA) - 1)/(ΔA) · ΔB, the (ΔA)⁻¹ of the formula.",
    "extra_delta": "Δ is counted twice: (ΔA)⁻¹(exp(ΔA) - 1)·ΔB = (exp(ΔA) - 1)/A · B. Dividing by A alone and "
                   "keeping ΔB multiplies by Δ once more.",
    "nan_at_zero": "B̄ is NaN where ΔA = 0 (0/0). The limit of (exp(x) - 1)/x as x -> 0 is 1, so B̄ = ΔB there: "
                   "torch.where(dA == 0, 1, expm1(dA) / dA), with a safe denominator so that no NaN appears at all.",
    "no_expm1": "exp(ΔA) - 1 loses its digits when ΔA is small (1.0000010 - 1 keeps one or two in float32): "
                "torch.expm1(x) computes exp(x) - 1 without the cancellation.",
    "euler_A": "Ā = 1 + ΔA is Euler's approximation; the zero-order hold keeps the exact Ā = exp(ΔA).",
    "mutates_input": "an input tensor (delta, A or B) was changed in place; compute new tensors instead.",
}


def _zoh_cases(g) -> list[Case]:
    cases = []
    for label, (Bsz, T, E, N), dtype in [("batch 2, T=3, E=2, N=4", (2, 3, 2, 4), torch.float32),
                                         ("batch 1, T=5, E=3, N=3, float64", (1, 5, 3, 3), torch.float64),
                                         ("batch 2, T=4, E=4, N=2", (2, 4, 4, 2), torch.float32)]:
        delta = F.softplus(randn(Bsz, T, E, gen=g, dtype=dtype))  # (B, T, E) > 0
        A = -torch.rand(E, N, generator=g, dtype=dtype) * 3 - 0.1  # (E, N) < 0
        A[0, 0] = 0.0  # a channel that only integrates: ΔA = 0
        A[-1, -1] = -1e-6  # a very slow decay: ΔA tiny
        cases.append(Case(f"{label}, {dtype}; A holds a 0 and a -1e-6", (delta, A, randn(Bsz, T, N, gen=g, dtype=dtype))))
    return cases


def _pair(out, what: str) -> tuple:
    if out is None:
        raise Mismatch(f"{what}: got None (did you forget a `return`?)")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Mismatch(f"{what} should return two tensors (A_bar, B_bar), got {type(out).__name__}")
    return tuple(out)


@register("check_discretize_zoh", points=3, minutes=25, reference=solution_text(DISCRETIZE_ZOH_CODE),
          misconceptions=ZOH_MISCONCEPTIONS, forbid=ZOH_FORBID,
          hint="A is diagonal, so every (channel, state) pair is a scalar system and the matrix formula becomes "
               "a division. What happens to it where ΔA is 0, or tiny?",
          idea="dA = delta[..., None]·A and dB = delta[..., None]·B[:, :, None, :], both (B, T, E, N); Ā = exp(dA); "
               "B̄ = expm1(dA)/dA · dB, with 1 in place of expm1(dA)/dA where dA == 0 (divide by a safe "
               "denominator so no NaN is ever made).")
@isolated
def check_discretize_zoh(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    cases = _zoh_cases(torch.Generator().manual_seed(143))
    refs, outs = [], []
    for case in cases:
        refs.append(discretize_reference(*case.args))
        before = snapshot(case.args)
        out = call_learner(learner, *case.args)
        try:
            assert_unmodified(case.args, before, ("delta", "A", "B"))
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {case.label}", "mutates_input") from None
        outs.append(_pair(out, "discretize_zoh"))
    flat_refs = [t for r in refs for t in r]
    flat_outs = [t for o in outs for t in o]
    for case, out, ref in zip(cases, outs, refs):
        try:
            compare(out[0], ref[0], "A_bar")
            compare(out[1], ref[1], "B_bar")
        except Mismatch as mm:
            variants = {k: (lambda k=k: [t for c in cases for t in _zoh_variant(*c.args, kind=k)])
                        for k in ZOH_MISCONCEPTIONS if k != "mutates_input"}
            raise Mismatch(mm.reason, f"case: {case.label}", diagnose(flat_outs, variants, flat_refs)) from None
    return len(cases)


# ------------------------------------------------------------------ part 6: the selective scan, exact and parallel
def selective_scan_zoh_reference(x, delta, A, B, C, D, *, euler=False):
    """Part 1's loop with the exact zero-order-hold B̄ (from the matrix exponential) or, euler=True, B̄ = ΔB."""
    A_bar, B_bar = discretize_reference(delta, A, B)  # (B, T, E, N) each
    if euler:
        B_bar = delta.unsqueeze(-1) * B.unsqueeze(2)  # (B, T, E, N)
    h = scan_reference(A_bar, B_bar * x.unsqueeze(-1))  # (B, T, E, N)
    return (h * C.unsqueeze(2)).sum(-1) + D * x  # (B, T, E)


SELECTIVE_ZOH_MISCONCEPTIONS = {
    "euler_B": "this is part 1's scan, with B̄ = ΔB (Mamba's simplification). Use your discretize_zoh for the exact "
               "zero-order-hold B̄.",
    "no_skip": "the skip term D·x_t is missing from y_t.",
    "loops_over_time": "the states were computed by a loop over time; use your parallel_scan on the pairs "
                       "(Ā_t, B̄_t·x_t).",
    "mutates_input": "an input tensor was changed in place; compute new tensors instead.",
}


def _selective_args(g, Bsz, T, E, N, dtype=torch.float32):
    x = randn(Bsz, T, E, gen=g, dtype=dtype)
    delta = F.softplus(randn(Bsz, T, E, gen=g, dtype=dtype))  # (B, T, E) > 0
    A = -torch.rand(E, N, generator=g, dtype=dtype) * 2 - 0.2  # (E, N) < 0
    A[0, 0] = 0.0  # one state that only integrates
    return (x, delta, A, randn(Bsz, T, N, gen=g, dtype=dtype), randn(Bsz, T, N, gen=g, dtype=dtype),
            randn(E, gen=g, dtype=dtype))


@register("check_selective_scan_zoh", points=2, minutes=10,
          reference=solution_text(PARALLEL_SCAN_CODE, SCAN_FUNCTION_CODE, DISCRETIZE_ZOH_CODE, SELECTIVE_SCAN_ZOH_CODE),
          misconceptions=SELECTIVE_ZOH_MISCONCEPTIONS, forbid=ZOH_FORBID,
          hint="Three lines: discretise, scan, read out. Which pairs (a_t, b_t) does the recurrence "
               "h_t = Ā_t·h_{t-1} + B̄_t·x_t hand to the scan?",
          idea="A_bar, B_bar = discretize_zoh(delta, A, B); h = ScanFunction.apply(A_bar, B_bar * x[..., None]); "
               "y = (h * C[:, :, None, :]).sum(-1) + D * x.")
@isolated
def check_selective_scan_zoh(learner):
    g = torch.Generator().manual_seed(144)
    cases = []
    for Bsz, T, E, N, dtype in [(1, 6, 2, 3, torch.float32), (2, 9, 4, 5, torch.float32),
                                (2, 1, 3, 2, torch.float32), (3, 12, 3, 4, torch.float64)]:
        cases.append(Case(f"x, delta ({Bsz}, {T}, {E}); A ({E}, {N}) with one 0; B, C ({Bsz}, {T}, {N}); D ({E},); "
                          f"{dtype}", _selective_args(g, Bsz, T, E, N, dtype)))
    variants = {"euler_B": lambda *a: selective_scan_zoh_reference(*a, euler=True),
                "no_skip": lambda x, delta, A, B, C, D: selective_scan_zoh_reference(x, delta, A, B, C, D * 0)}
    n = grade_function(learner, cases, selective_scan_zoh_reference, variants, ("x", "delta", "A", "B", "C", "D"))
    # gradients, on inputs without ΔA = 0 (where the derivative of (exp(x) - 1)/x is 1/2, which a torch.where hides)
    inputs = _selective_args(g, 2, 9, 3, 4, torch.float64)
    inputs[2][0, 0] = -0.5
    label = "gradients of y.sum() for x, delta (2, 9, 3), A (3, 4), B, C (2, 9, 4), D (3,), float64"
    mine = [t.clone().requires_grad_() for t in inputs]
    y = call_learner(learner, *mine)
    if not isinstance(y, torch.Tensor) or y.grad_fn is None:
        raise Mismatch("your output carries no gradient: build it with differentiable operations (no torch.no_grad, "
                       "no .detach())", f"case: {label}")
    got = call_learner(torch.autograd.grad, y.sum(), mine, allow_unused=True)
    theirs = [t.clone().requires_grad_() for t in inputs]
    want = torch.autograd.grad(selective_scan_zoh_reference(*theirs).sum(), theirs)
    for name, gt, w in zip(("x", "delta", "A", "B", "C", "D"), got, want):
        if gt is None:
            raise Mismatch(f"no gradient reached `{name}`", f"case: {label}")
        compare(gt, w, f"the gradient of {name}")
    _assert_log_depth(learner, lambda T: _selective_args(g, 1, T, 2, 2), "your selective scan")
    return n
