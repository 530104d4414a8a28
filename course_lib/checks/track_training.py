"""Checks for part 4 of the from-scratch track (the capstone): the learner's AdamW, its parameter
groups, and a training loop with evaluation and checkpoints that resume.

* `check_adamw(AdamW)`: a torch.optim.Optimizer subclass, run 100 steps on a small model with two
  param groups (decay / no decay, their own lr) whose lr changes before every step, then the same
  run interrupted by a state_dict() / load_state_dict() round trip, then the default arguments;
  each equal to torch.optim.AdamW within 1e-6. Kingma & Ba's "epsilon hat" form of the update
  (the step size folds in both bias corrections and eps is added to sqrt(v); Keras' Adam) is
  accepted too: it differs from PyTorch's only in where eps acts.
* `check_param_groups(param_groups)`: decay on matrices, none on norm weights and biases; the
  embedding (tied to the head) may be in either group, both are published conventions
  (nanoGPT decays it, minGPT and course_lib do not).
* `check_train_loop(train)`: `train`, and `evaluate`, `save_checkpoint`, `load_checkpoint` found by
  those names next to it (the notebook's globals): evaluation mode, checkpoints, and a run of N
  steps equal to N/2 steps + checkpoint + fresh model and optimiser + the other N/2 (and to a run
  that crashed and resumed from its last periodic checkpoint).
"""
from __future__ import annotations

import io
import math
import os
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.device import single_thread
from .core import REGISTRY, Delegates, LearnerError, Mismatch, call_learner, register



# ================================================================== AdamW
ADAMW_SOLUTION = '''import math

import torch


class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)  # builds self.param_groups and self.state

    @torch.no_grad()  # the update itself must not be recorded by autograd
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"]  # read it here: a schedule changes it between steps
            beta1, beta2 = group["betas"]
            eps, weight_decay = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]  # in the state, so state_dict() saves it
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)  # m: running mean of g
                    state["exp_avg_sq"] = torch.zeros_like(p)  # v: running mean of g * g
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]

                # decoupled weight decay: shrink the weights, never touch the gradient
                p.mul_(1 - lr * weight_decay)

                # the moments, updated in place
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)

                # bias correction: m and v start at 0, so early averages are too small
                m_hat = m / (1 - beta1 ** t)
                v_hat = v / (1 - beta2 ** t)

                # eps outside the square root
                p.addcdiv_(m_hat, v_hat.sqrt() + eps, value=-lr)
        return loss
'''

ADAMW_MISCONCEPTIONS = {
    "coupled_l2": "the weight decay was added to the gradient (g + weight_decay·p, L2 regularisation as in "
                  "Adam), so it is divided by sqrt(v) like the rest. AdamW decouples it: p ← p − lr·weight_decay·p, "
                  "separately from the Adam step, and m and v only ever see the gradient.",
    "no_bias_correction": "m and v start at 0, so their early averages are too small; divide them by "
                          "(1 − beta1**t) and (1 − beta2**t), with t the parameter's step count starting at 1.",
    "eps_inside_sqrt": "eps is inside the square root (sqrt(v_hat + eps)); it belongs outside: sqrt(v_hat) + eps.",
    "ignores_group_settings": "the update uses the lr or weight_decay given to __init__ (self.defaults or an "
                              "attribute) instead of the param group's group['lr'] / group['weight_decay']: "
                              "per-group settings and a schedule that writes group['lr'] have no effect.",
    "step_not_in_state": "after load_state_dict() the bias correction started again from t = 1: keep each "
                         "parameter's step count in self.state[p] (e.g. state['step']) so that state_dict() "
                         "saves it, not in an attribute of the optimiser.",
}

# the modules forbid everything in them when reading the code; their functions are also named, so that
# a call is caught while the code runs even where reading cannot see it (a decorated step)
_ADAM_FORBID = ("torch.optim.AdamW", "torch.optim.Adam", "torch.optim.adamw", "torch.optim.adam",
                "torch.optim.adamw.adamw", "torch.optim.adam.adam", "torch._fused_adamw_", "torch._fused_adam_",
                "course_lib")


class _Variant(torch.optim.Optimizer):
    """The grader's AdamW with switches that reproduce the mistakes (and Kingma & Ba's eps-hat form)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, **flags):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.flags = flags
        self.t = 0

    @torch.no_grad()
    def step(self, closure=None):
        f = self.flags
        self.t += 1
        for group in self.param_groups:
            lr = self.defaults["lr"] if f.get("default_lr") else group["lr"]
            wd = self.defaults["weight_decay"] if f.get("default_wd") else group["weight_decay"]
            (b1, b2), eps = group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                st["step"] += 1
                t = self.t if f.get("step_outside") else st["step"]
                g = p.grad + wd * p if f.get("coupled") else p.grad
                if not f.get("coupled"):
                    p.mul_(1 - lr * wd)
                st["m"].lerp_(g, 1 - b1)
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                c1, c2 = (1.0, 1.0) if f.get("no_bc") else (1 - b1 ** t, 1 - b2 ** t)
                if f.get("eps_hat"):  # Kingma & Ba, Algorithm 1's efficient form: eps added to sqrt(v)
                    p.addcdiv_(st["m"], st["v"].sqrt().add_(eps), value=-lr * math.sqrt(c2) / c1)
                elif f.get("eps_inside"):
                    p.addcdiv_(st["m"] / c1, (st["v"] / c2).add(eps).sqrt(), value=-lr)
                else:
                    p.addcdiv_(st["m"], (st["v"].sqrt() / math.sqrt(c2)).add_(eps), value=-lr / c1)


def _init_params() -> list[torch.Tensor]:
    """W1 (12, 6), b1 (12,), gain (12,), W2 (3, 12), b2 (3,): matrices, biases and a norm-like gain."""
    g = torch.Generator().manual_seed(11)
    shapes = [((12, 6), 0.4), ((12,), 0.1), ((12,), None), ((3, 12), 0.3), ((3,), 0.1)]
    return [torch.ones(s) if sc is None else torch.randn(s, generator=g) * sc for s, sc in shapes]


def _task():
    g = torch.Generator().manual_seed(12)
    return torch.randn(32, 6, generator=g), torch.randn(32, 3, generator=g)


def _loss(ps, x, y):
    w1, b1, gain, w2, b2 = ps
    h = torch.tanh(x @ w1.T + b1) * gain  # (N, 12)
    # scaled by 1e-3 so that gradients are ~1e-3 and eps (1e-8, and 1e-4 inside a sqrt) matters
    return 1e-3 * ((h @ w2.T + b2 - y) ** 2).mean()


_BASE_LR = 5e-3


def _schedule(step: int, base: float) -> float:
    if step < 10:
        return base * (step + 1) / 10
    return 0.1 * base + 0.45 * base * (1 + math.cos(math.pi * (step - 10) / 90))


def _groups(ps):
    return [{"params": [ps[0], ps[3]], "weight_decay": 0.1},
            {"params": [ps[1], ps[2], ps[4]], "weight_decay": 0.0, "lr": 2 * _BASE_LR}]


_GROUP_KW = dict(lr=_BASE_LR, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


def _run(ps, opt, start, stop, step_fn, scheduled=True):
    x, y = _task()
    bases = [_BASE_LR, 2 * _BASE_LR]
    for step in range(start, stop):
        if scheduled:
            for group, base in zip(opt.param_groups, bases):
                group["lr"] = _schedule(step, base)
        for p in ps:
            p.grad = None
        with torch.enable_grad():
            _loss(ps, x, y).backward()
        step_fn(opt)


def _fresh():
    return [nn.Parameter(p) for p in _init_params()]


def _reference_runs(make, **flags):
    """{case: final parameters} of the grader's runs with optimiser class `make` (and `flags`)."""
    kw = dict(flags)
    out = {}
    ps = _fresh()
    opt = make(_groups(ps), **_GROUP_KW, **kw)
    _run(ps, opt, 0, 100, lambda o: o.step())
    out["groups"] = [p.detach().clone() for p in ps]
    ps = _fresh()
    opt = make(_groups(ps), **_GROUP_KW, **kw)
    _run(ps, opt, 0, 60, lambda o: o.step())
    saved = _through_file(opt.state_dict())
    ps2 = [nn.Parameter(p.detach().clone()) for p in ps]
    opt2 = make(_groups(ps2), **_GROUP_KW, **kw)
    opt2.load_state_dict(saved)
    _run(ps2, opt2, 60, 100, lambda o: o.step())
    out["resume"] = [p.detach().clone() for p in ps2]
    ps = _fresh()
    opt = make(ps, **kw)
    _run(ps, opt, 0, 30, lambda o: o.step(), scheduled=False)
    out["defaults"] = [p.detach().clone() for p in ps]
    return out


def _through_file(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def _max_err(a: list, b: list) -> float:
    return max(float((x.detach().double() - y.detach().double()).abs().nan_to_num(float("inf")).max())
               for x, y in zip(a, b))


def _close(a: list, b: list) -> bool:
    """Within 1e-6 of each other (plus 1e-6 relative, for float32 rounding of entries larger than 1)."""
    return all(x.shape == y.shape and bool(torch.isclose(x.detach().double(), y.detach().double(),
                                                         rtol=1e-6, atol=1e-6).all()) for x, y in zip(a, b))


_CASES = {"groups": "100 steps, two param groups (weight_decay 0.1 / 0.0, lr / 2·lr), lr changed before every step",
          "resume": "60 steps, state_dict() saved to a file, a new optimiser that load_state_dict()s it, 40 more steps",
          "defaults": "AdamW(params) with its default arguments, 30 steps"}
_VARIANTS = {"coupled_l2": [dict(coupled=True)], "no_bias_correction": [dict(no_bc=True)],
             "eps_inside_sqrt": [dict(eps_inside=True)],
             "ignores_group_settings": [dict(default_lr=True), dict(default_wd=True),
                                        dict(default_lr=True, default_wd=True)],
             "step_not_in_state": [dict(step_outside=True)]}


def _learner_runs(learner) -> dict:
    out = {}

    def step(opt):
        call_learner(opt.step)

    def build(*args, **kw):
        opt = call_learner(learner, *args, **kw)
        if not isinstance(opt, torch.optim.Optimizer):
            raise Mismatch(f"AdamW(...) gave a {type(opt).__name__}; make AdamW a subclass of torch.optim.Optimizer "
                           "(class AdamW(torch.optim.Optimizer)) and call super().__init__(params, defaults)")
        return opt

    try:
        ps = _fresh()
        opt = build(_groups(ps), **_GROUP_KW)
        _run(ps, opt, 0, 100, step)
        out["groups"] = [p.detach().clone() for p in ps]
        ps = _fresh()
        opt = build(_groups(ps), **_GROUP_KW)
        _run(ps, opt, 0, 60, step)
        saved = _through_file(call_learner(opt.state_dict))
        ps2 = [nn.Parameter(p.detach().clone()) for p in ps]
        opt2 = build(_groups(ps2), **_GROUP_KW)
        call_learner(opt2.load_state_dict, saved)
        _run(ps2, opt2, 60, 100, step)
        out["resume"] = [p.detach().clone() for p in ps2]
        ps = _fresh()
        opt = build(ps)
        _run(ps, opt, 0, 30, step, scheduled=False)
        out["defaults"] = [p.detach().clone() for p in ps]
    except LearnerError as err:
        if "leaf Variable" in err.summary or "in-place operation" in err.summary:
            raise Mismatch("your step changes the parameters in place while autograd is recording; "
                           "decorate step with @torch.no_grad()", err.report) from None
        raise
    return out


@register("check_adamw", points=4, reference=ADAMW_SOLUTION, misconceptions=ADAMW_MISCONCEPTIONS, minutes=40,
          forbid=_ADAM_FORBID,
          hint="For every group, for every p with a gradient: keep step, m and v in self.state[p]; "
               "p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; "
               "p ← p − lr·m̂ / (sqrt(v̂) + eps) with m̂ = m/(1−β1^t), v̂ = v/(1−β2^t). Decorate step with @torch.no_grad().",
          idea="super().__init__(params, defaults) turns params (a list of tensors, or of dicts with their own "
               "lr / weight_decay) into self.param_groups, each a dict holding every setting; read lr, betas, eps "
               "and weight_decay from the group inside step, since a schedule rewrites group['lr']. "
               "self.state[p] is a dict per parameter that state_dict() saves and load_state_dict() restores: "
               "keep the step count t there too. The decay is decoupled: it shrinks p directly and never enters m or v.")
def check_adamw(learner):
    if not isinstance(learner, type):
        raise Mismatch(f"pass the class itself (check_adamw(AdamW)), not a {type(learner).__name__}")
    for base in learner.__mro__[1:]:  # a subclass of torch's Adam with nothing of its own
        used = REGISTRY["check_adamw"].forbid.forbidden(base)
        if used:
            raise Delegates([used], REGISTRY["check_adamw"].forbid)
    with single_thread():
        return _grade_adamw(learner)


def _grade_adamw(learner) -> int:
    mine = _learner_runs(learner)
    refs = {"torch": _torch_runs(), "eps_hat": _reference_runs(_Variant, eps_hat=True)}
    for case, label in _CASES.items():
        if any(_close(mine[case], r[case]) for r in refs.values()):
            continue
        err = _max_err(mine[case], refs["torch"][case])
        if not all(torch.isfinite(p).all() for p in mine[case]):
            raise Mismatch(f"your parameters became NaN or inf ({label})")
        key = None
        for k, flag_sets in _VARIANTS.items():
            for flags in flag_sets:
                runs = _reference_runs(_Variant, **flags)
                if not _close(runs[case], refs["torch"][case]) and _close(mine[case], runs[case]):
                    key = k
                    break
            if key:
                break
        raise Mismatch(f"after {label}, your parameters differ from torch.optim.AdamW's "
                       f"(max abs error {err:.3g}; allowed 1e-6)", f"case: {label}", key)
    return len(_CASES)


def _torch_runs():
    def make(params, **kw):
        return torch.optim.AdamW(params, foreach=False, **kw)
    return _reference_runs(make)


# ================================================================== param groups
PARAM_GROUPS_SOLUTION = '''def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for p in model.parameters():  # a tied weight is listed once
        if not p.requires_grad:
            continue
        if p.ndim >= 2:
            decay.append(p)  # weight matrices (and the embedding)
        else:
            no_decay.append(p)  # norm weights and biases
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
'''

PARAM_GROUPS_MISCONCEPTIONS = {
    "decay_everything": "norm weights and biases are decayed too. Decay pulls a weight towards 0: right for "
                        "matrices, wrong for a norm's gain (its neutral value is 1) and for biases; put 1-D "
                        "parameters in a group with weight_decay 0.0.",
    "groups_swapped": "the decay and no-decay groups are swapped: matrices (ndim >= 2) get weight_decay, "
                      "norm weights and biases (1-D) get 0.0.",
    "no_decay_group_default": "the no-decay group has no 'weight_decay' key, so the optimiser's default "
                              "(0.01 in AdamW) applies to it; give it 'weight_decay': 0.0.",
    "tied_counted_twice": "a tied weight (the embedding shared with the head) is listed twice; it is one "
                          "parameter: iterate model.parameters(), which yields each parameter once.",
}


class _RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


class _TiedLM(nn.Module):
    """Embedding, an RMSNorm, projections with and without bias, a LayerNorm, a tied head."""

    def __init__(self):
        super().__init__()
        self.tok_emb = nn.Embedding(11, 8)
        self.attn_norm = _RMSNorm(8)
        self.q_proj = nn.Linear(8, 8, bias=False)
        self.up_proj = nn.Linear(8, 16)
        self.down_proj = nn.Linear(16, 8)
        self.final_norm = nn.LayerNorm(8)
        self.lm_head = nn.Linear(8, 11, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied

    def forward(self, ids):
        x = self.tok_emb(ids)  # (B, T, C)
        x = x + self.q_proj(self.attn_norm(x))
        x = x + self.down_proj(torch.relu(self.up_proj(x)))  # (B, T, C)
        return self.lm_head(self.final_norm(x))  # (B, T, V)


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.norm = nn.LayerNorm(7)
        self.fc2 = nn.Linear(7, 2)


def _decays(groups, model, wd: float, label: str) -> dict[str, float | None]:
    """name -> the weight decay that learner's groups give it (None: the optimiser's default)."""
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) and "params" in g for g in groups):
        raise Mismatch(f"param_groups should return a list of dicts like {{'params': [...], 'weight_decay': {wd}}}, "
                       f"got {type(groups).__name__}", f"case: {label}")
    names = {id(p): n for n, p in model.named_parameters()}
    got: dict[str, float | None] = {}
    twice = []
    for g in groups:
        params = g["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for p in params:
            if id(p) not in names:
                raise Mismatch("a group holds a tensor that is not one of the model's parameters", f"case: {label}")
            n = names[id(p)]
            if n in got:
                twice.append(n)
            got[n] = g.get("weight_decay")
    if twice:
        raise Mismatch(f"{twice[0]} is in the groups twice", f"case: {label}", "tied_counted_twice")
    missing = [n for n in names.values() if n not in got]
    if missing:
        raise Mismatch(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} in no group, so the optimiser "
                       f"would never train {'it' if len(missing) == 1 else 'them'}", f"case: {label}")
    return got


def _grade_groups(groups, model, wd: float, label: str, either: set[str]) -> None:
    got = _decays(groups, model, wd, label)
    params = dict(model.named_parameters())
    matrices = [n for n in got if params[n].ndim >= 2 and n not in either]
    vectors = [n for n in got if params[n].ndim < 2]
    for n in either:
        if got[n] not in (wd, 0.0):
            raise Mismatch(f"{n} has weight_decay {got[n]}; the tied embedding may have {wd} or 0.0",
                           f"case: {label}")
    bad_m = [n for n in matrices if got[n] != wd]
    bad_v = [n for n in vectors if got[n] != 0.0]
    if not bad_m and not bad_v:
        return
    if bad_v and all(got[n] is None for n in bad_v):
        key = "no_decay_group_default"
    elif bad_v and not bad_m and all(got[n] == wd for n in bad_v):
        key = "decay_everything"
    elif len(bad_m) == len(matrices) and len(bad_v) == len(vectors) and all(got[n] == wd for n in vectors):
        key = "groups_swapped"
    else:
        key = None
    n = (bad_v or bad_m)[0]
    expected = 0.0 if n in bad_v else wd
    shape = tuple(params[n].shape)
    raise Mismatch(f"{n} (shape {shape}) gets weight_decay {got[n]}, expected {expected}", f"case: {label}", key)


@register("check_param_groups", points=2, reference=PARAM_GROUPS_SOLUTION, misconceptions=PARAM_GROUPS_MISCONCEPTIONS,
          minutes=10, forbid=("course_lib",),
          hint="Two groups: {'params': the parameters with p.ndim >= 2, 'weight_decay': weight_decay} and "
               "{'params': the 1-D ones (norm weights, biases), 'weight_decay': 0.0}. Iterate model.parameters().",
          idea="Weight decay pulls every weight towards 0 at each step. That regularises weight matrices; a "
               "norm's gain should stay near 1 and a bias has nothing to regularise, so they are left alone. "
               "p.ndim tells them apart; model.parameters() lists a tied weight only once.")
def check_param_groups(learner):
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    cases = [("a small LLaMA-like model with a tied embedding, weight_decay=0.1", _TiedLM, 0.1, {"tok_emb.weight"}),
             ("an MLP with a LayerNorm, weight_decay=0.05", _MLP, 0.05, set())]
    for label, make, wd, either in cases:
        with torch.random.fork_rng(), single_thread():
            torch.manual_seed(0)
            model = make()
        groups = call_learner(learner, model, wd)
        _grade_groups(groups, model, wd, label, either)
    return len(cases)


# ================================================================== training loop
TRAIN_LOOP_SOLUTION = '''import os

import torch


def cross_entropy(logits, targets, ignore_index=-100):  # part 1
    logits = logits.reshape(-1, logits.shape[-1]).float()  # (N, V)
    targets = targets.reshape(-1)  # (N,)
    keep = targets != ignore_index
    logits, targets = logits[keep], targets[keep]
    m = logits.max(dim=-1, keepdim=True).values  # (N, 1)
    lse = m.squeeze(-1) + (logits - m).exp().sum(dim=-1).log()  # (N,)
    picked = logits.gather(-1, targets[:, None]).squeeze(-1)  # (N,)
    return (lse - picked).mean()


def clip_grad_norm(parameters, max_norm):  # part 4
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
    if total > max_norm:
        for g in grads:
            g.mul_(max_norm / (total + 1e-6))
    return total


def evaluate(model, batches):
    model.eval()  # dropout off
    losses = []
    with torch.no_grad():  # no graph: less memory, faster
        for x, y in batches:
            losses.append(cross_entropy(model(x), y).item())
    model.train()  # back to training mode for the caller
    return sum(losses) / len(losses)


def save_checkpoint(path, model, optimizer, step):
    torch.save({"model": model.state_dict(),
                "optimizer": optimizer.state_dict(),  # AdamW's m, v and step counts
                "step": step}, path)


def load_checkpoint(path, model, optimizer):
    ckpt = torch.load(path)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt["step"]


def train(model, optimizer, get_batch, steps, lr_at, ckpt_path=None, ckpt_every=100, clip=1.0):
    start = 0
    if ckpt_path is not None and os.path.exists(ckpt_path):
        start = load_checkpoint(ckpt_path, model, optimizer)  # resume where it stopped
    model.train()
    losses = []
    for step in range(start, steps):
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(step)
        loss = cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        clip_grad_norm(model.parameters(), clip)
        optimizer.step()
        losses.append(loss.item())
        done = step + 1  # steps finished so far: where a resumed run starts
        if ckpt_path is not None and (done % ckpt_every == 0 or done == steps):
            save_checkpoint(ckpt_path, model, optimizer, done)
    return losses
'''

TRAIN_LOOP_MISCONCEPTIONS = {
    "evaluate_train_mode": "evaluate ran the model in training mode (dropout still active): call model.eval() first.",
    "evaluate_tracks_grad": "evaluate let autograd record the forward passes: wrap them in `with torch.no_grad():`.",
    "evaluate_leaves_eval_mode": "after evaluate the model was still in eval mode, so training would go on without "
                                 "dropout: call model.train() before returning.",
    "optimizer_state_not_saved": "the checkpoint does not restore the optimiser: AdamW's m, v and step counts start "
                                 "again from zero. Save optimizer.state_dict() and load it with "
                                 "optimizer.load_state_dict().",
    "step_not_saved": "the resumed run started again at step 0 (the schedule restarts and the steps are run twice): "
                      "save the step in the checkpoint, return it from load_checkpoint and start the loop there.",
    "no_zero_grad": "the gradients accumulate from step to step: call optimizer.zero_grad() (or set p.grad = None) "
                    "before each backward.",
    "lr_not_set": "the learning rate never changed: write lr_at(step) into every param group "
                  "(for group in optimizer.param_groups: group['lr'] = lr) before optimizer.step().",
    "no_clipping": "the gradients were not clipped: call clip_grad_norm(model.parameters(), clip) between "
                   "backward() and optimizer.step().",
}

_V, _N_STEPS, _CLIP = 7, 24, 0.5


class _CharLM(nn.Module):
    """A tiny next-token model (embedding -> MLP -> logits); `seed` sets its initial weights."""

    def __init__(self, seed: int, dropout: float = 0.0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.emb = nn.Embedding(_V, 16)
            self.fc = nn.Linear(16, 16)
            self.norm = nn.LayerNorm(16)
            self.out = nn.Linear(16, _V)
        self.drop = nn.Dropout(dropout)
        self.seen: list[tuple[bool, bool]] = []  # (training, grad enabled) at each forward

    def forward(self, ids):
        self.seen.append((self.training, torch.is_grad_enabled()))
        h = self.drop(torch.tanh(self.fc(self.emb(ids))))  # (B, T, C)
        return self.out(self.norm(h))  # (B, T, V)


class _Crash(Exception):
    """The grader's simulated crash in the middle of a run."""


def _get_batch(step: int, crash_at: int | None = None):
    if crash_at is not None and step == crash_at:
        raise _Crash(f"simulated crash at step {step}")
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randint(0, _V, (4, 8), generator=g)  # (B, T)
    return x, (x + 1) % _V  # predict the next symbol: learnable in a few steps


def _lr_at(step: int) -> float:
    return 3e-2 * min(1.0, (step + 1) / 4) * (0.3 + 0.7 * 0.5 * (1 + math.cos(math.pi * step / _N_STEPS)))


def _optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, foreach=False)


def _reference_train(model, opt, steps, start=0, *, zero_grad=True, set_lr=True, clip=True) -> list[float]:
    losses = []
    for step in range(start, steps):
        if set_lr:
            for group in opt.param_groups:
                group["lr"] = _lr_at(step)
        x, y = _get_batch(step)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())  # (B*T, V) vs (B*T,)
        if zero_grad:
            opt.zero_grad()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), _CLIP)
        opt.step()
        losses.append(loss.item())
    return losses


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a: list, b: list, rtol=1e-4, atol=1e-5) -> bool:
    return all(x.shape == y.shape and bool(torch.isclose(x, y, rtol=rtol, atol=atol).all()) for x, y in zip(a, b))


def _floats(out, what: str, case: str) -> list[float]:
    if not isinstance(out, (list, tuple)):
        raise Mismatch(f"{what} should return a list of the losses (floats), got {type(out).__name__}"
                       + (" (did you forget a `return`?)" if out is None else ""), f"case: {case}")
    try:
        return [float(v) for v in out]
    except (TypeError, ValueError, RuntimeError):
        raise Mismatch(f"{what} should return a list of floats (loss.item()), got items of type "
                       f"{type(out[0]).__name__}", f"case: {case}") from None


def _learner_parts(train) -> dict:
    home = getattr(train, "__globals__", None)
    if not callable(train) or home is None:
        raise Mismatch("pass your train function: check_train_loop(train)")
    parts = {"train": train}
    for name in ("evaluate", "save_checkpoint", "load_checkpoint"):
        fn = home.get(name)
        if not callable(fn):
            raise Mismatch(f"check_train_loop also grades `{name}`: define it (with that name) in the same "
                           "notebook as train")
        parts[name] = fn
    return parts


def _check_evaluate(evaluate) -> None:
    case = "evaluate(model, 3 batches) on a model with dropout 0.5, in training mode"
    model = _CharLM(seed=3, dropout=0.5)
    batches = [_get_batch(500 + i) for i in range(3)]
    model.train()
    out = call_learner(evaluate, model, batches)
    seen, model.seen = model.seen, []
    if any(training for training, _ in seen):
        raise Mismatch("evaluate called the model in training mode", f"case: {case}", "evaluate_train_mode")
    if any(grad for _, grad in seen):
        raise Mismatch("evaluate ran the model with autograd recording", f"case: {case}", "evaluate_tracks_grad")
    if not model.training:
        raise Mismatch("the model was left in eval mode", f"case: {case}", "evaluate_leaves_eval_mode")
    if not seen:
        raise Mismatch("evaluate never called the model", f"case: {case}")
    model.eval()
    with torch.no_grad():
        expected = sum(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item() for x, y in batches) / len(batches)  # (B·T, V) vs (B·T,)
    try:
        value = float(out)
    except (TypeError, ValueError, RuntimeError):
        raise Mismatch(f"evaluate should return the mean loss as a float, got {type(out).__name__}"
                       + (" (did you forget a `return`?)" if out is None else ""), f"case: {case}") from None
    if not math.isclose(value, expected, rel_tol=1e-4):
        raise Mismatch(f"evaluate returned {value:.6g}, expected the mean loss over the batches {expected:.6g}",
                       f"case: {case}")


def _check_checkpoint(save_checkpoint, load_checkpoint, folder: str) -> None:
    case = "save_checkpoint(path, model, optimizer, 7), then load_checkpoint(path, fresh model, fresh optimizer)"
    model, path = _CharLM(seed=4), os.path.join(folder, "roundtrip.pt")
    opt = _optimizer(model)
    _reference_train(model, opt, 3)
    call_learner(save_checkpoint, path, model, opt, 7)
    if not os.path.exists(path):
        raise Mismatch("save_checkpoint wrote no file at the path it was given", f"case: {case}")
    fresh = _CharLM(seed=5)
    fresh_opt = _optimizer(fresh)
    step = call_learner(load_checkpoint, path, fresh, fresh_opt)
    if not _same(_params(fresh), _params(model), 0, 0):
        raise Mismatch("after load_checkpoint the model's parameters differ from the saved model's "
                       "(save model.state_dict() and load it with model.load_state_dict())", f"case: {case}")
    saved, loaded = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    if not loaded or set(saved) != set(loaded) or any(
            not torch.equal(torch.as_tensor(saved[i][k]), torch.as_tensor(loaded[i][k])) for i in saved for k in saved[i]):
        raise Mismatch("after load_checkpoint the optimiser's state differs from the saved optimiser's",
                       f"case: {case}", "optimizer_state_not_saved")
    if isinstance(step, torch.Tensor) and step.numel() == 1:
        step = step.item()
    if step != 7:
        raise Mismatch(f"load_checkpoint returned {step!r}, expected the saved step 7", f"case: {case}",
                       "step_not_saved")


def _check_training(train, folder: str) -> None:
    # one run of N steps, compared with the grader's loop
    case = f"train(model, AdamW, get_batch, steps={_N_STEPS}, lr_at, clip={_CLIP}) from scratch, no checkpoint"
    model = _CharLM(seed=6)
    losses = _floats(call_learner(train, model, _optimizer(model), _get_batch, _N_STEPS, _lr_at,
                                  ckpt_path=None, ckpt_every=100, clip=_CLIP), "train", case)
    straight = _params(model)
    ref_model = _CharLM(seed=6)
    ref_losses = _reference_train(ref_model, _optimizer(ref_model), _N_STEPS)
    if len(losses) != _N_STEPS:
        raise Mismatch(f"train returned {len(losses)} losses for {_N_STEPS} steps", f"case: {case}")
    if not _same(straight, _params(ref_model)) or not all(math.isclose(a, b, rel_tol=1e-4) for a, b in
                                                        zip(losses, ref_losses)):
        key = None
        for k, flags in (("no_zero_grad", dict(zero_grad=False)), ("lr_not_set", dict(set_lr=False)),
                         ("no_clipping", dict(clip=False))):
            m = _CharLM(seed=6)
            _reference_train(m, _optimizer(m), _N_STEPS, **flags)
            if _same(straight, _params(m)):
                key = k
                break
        first = next((i for i, (a, b) in enumerate(zip(losses, ref_losses)) if not math.isclose(a, b, rel_tol=1e-4)),
                     None)
        where = f"the loss of step {first} is {losses[first]:.6g}, expected {ref_losses[first]:.6g}" \
            if first is not None else "the losses agree but the final parameters differ"
        raise Mismatch(f"train's run differs from the reference loop: {where}", f"case: {case}", key)

    # the same run cut in two halves with a checkpoint in between, the second half on a fresh model
    half, path = _N_STEPS // 2, os.path.join(folder, "resume.pt")
    case = (f"train(steps={half}, ckpt_path) on one model, then train(steps={_N_STEPS}, same ckpt_path) "
            "on a fresh model and optimiser")
    first = _CharLM(seed=6)
    part1 = _floats(call_learner(train, first, _optimizer(first), _get_batch, half, _lr_at,
                                 ckpt_path=path, ckpt_every=5, clip=_CLIP), "train", case)
    if not os.path.exists(path):
        raise Mismatch("train(..., ckpt_path=path) saved no checkpoint", f"case: {case}")
    second = _CharLM(seed=7)  # other initial weights: only the checkpoint can make it right
    part2 = _floats(call_learner(train, second, _optimizer(second), _get_batch, _N_STEPS, _lr_at,
                                 ckpt_path=path, ckpt_every=5, clip=_CLIP), "train", case)
    if len(part2) == _N_STEPS:
        raise Mismatch(f"the resumed run ran all {_N_STEPS} steps again instead of the last {_N_STEPS - half}",
                       f"case: {case}", "step_not_saved")
    tail_ok = all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(part2, losses[_N_STEPS - len(part2):]))
    if not (_same(_params(second), straight) and tail_ok):
        m = _CharLM(seed=6)
        _reference_train(m, _optimizer(m), half)
        _reference_train(m, _optimizer(m), _N_STEPS, start=half)  # a fresh optimiser after the checkpoint
        key = "optimizer_state_not_saved" if _same(_params(second), _params(m)) else None
        raise Mismatch(f"the resumed run ends with other parameters than the run in one go "
                       f"(losses returned: {len(part1)} + {len(part2)})", f"case: {case}", key)

    # a crash in the middle: the next call resumes from the last periodic checkpoint
    crash, path = 13, os.path.join(folder, "crash.pt")
    case = (f"train(steps={_N_STEPS}, ckpt_path, ckpt_every=5) crashing at step {crash}, "
            "then train(...) again on a fresh model and optimiser")
    first = _CharLM(seed=6)
    try:
        call_learner(train, first, _optimizer(first), lambda s: _get_batch(s, crash), _N_STEPS, _lr_at,
                     ckpt_path=path, ckpt_every=5, clip=_CLIP)
    except LearnerError as err:
        if not isinstance(err.exc, _Crash):
            raise
    else:
        raise Mismatch(f"get_batch raised an exception at step {crash} but train did not stop: let it propagate",
                       f"case: {case}")
    second = _CharLM(seed=7)
    rest = _floats(call_learner(train, second, _optimizer(second), _get_batch, _N_STEPS, _lr_at,
                                ckpt_path=path, ckpt_every=5, clip=_CLIP), "train", case)
    if len(rest) >= _N_STEPS or len(rest) < _N_STEPS - crash:
        raise Mismatch(f"after the crash train ran {len(rest)} steps: it should resume from the last checkpoint "
                       f"(saved every ckpt_every=5 steps, so at step 10)", f"case: {case}")
    if not _same(_params(second), straight):
        raise Mismatch("the run resumed after the crash ends with other parameters than the run in one go",
                       f"case: {case}")


@register("check_train_loop", points=4, reference=TRAIN_LOOP_SOLUTION, misconceptions=TRAIN_LOOP_MISCONCEPTIONS,
          minutes=35, forbid=("torch.nn.functional.cross_entropy", "torch.nn.CrossEntropyLoss",
                              "torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_norm", "course_lib"),
          hint="evaluate: model.eval(), torch.no_grad(), mean of the batch losses, model.train(). "
               "Checkpoint: a dict of model.state_dict(), optimizer.state_dict() and step, via torch.save / torch.load. "
               "train: resume if ckpt_path exists; per step: set the lr, get_batch(step), loss, zero_grad, backward, "
               "clip, optimizer.step(); save every ckpt_every steps and at the end.",
          idea="Resuming is exact when everything the next step depends on is restored: the weights, the "
               "optimiser's moments and step counts (AdamW's bias correction depends on them), and the step number "
               "(the schedule and the batches depend on it). Save the number of steps finished, start the loop there, "
               "and a run cut in two equals the run in one go.")
def check_train_loop(learner):
    parts = _learner_parts(learner)
    with torch.random.fork_rng(), single_thread():  # the learner's notebook keeps its own random state
        torch.manual_seed(0)
        _check_evaluate(parts["evaluate"])
        with tempfile.TemporaryDirectory() as folder:
            _check_checkpoint(parts["save_checkpoint"], parts["load_checkpoint"], folder)
            _check_training(parts["train"], folder)
    return 5
