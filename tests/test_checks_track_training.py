"""check_adamw, check_param_groups and check_train_loop (part 4 of the from-scratch track), both
ways: correct code written in other ways passes, each misconception written as a learner would
write it is named, delegation is refused, bad output gets a one-line verdict."""
import math
import textwrap

import pytest
import torch

from course_lib.checks import REGISTRY, check_adamw, check_param_groups, check_train_loop
from course_lib.checks.track_training import TRAIN_LOOP_SOLUTION

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted

pytestmark = pytest.mark.usefixtures("quiet_checks")


def learner_class(source: str, name: str = "AdamW"):
    """A class defined from source in its own namespace, as a notebook cell defines it."""
    ns = {"__name__": "learner_notebook", "torch": torch, "math": math}
    exec(textwrap.dedent(source), ns)  # noqa: S102 - test code
    return ns[name]


# ================================================================== AdamW
ADAMW_TEMPLATE = '''
class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["t"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["t"] += 1
                t, m, v, g = state["t"], state["m"], state["v"], p.grad
{body}
'''


def adamw(body: str):
    return learner_class(ADAMW_TEMPLATE.format(body=textwrap.indent(textwrap.dedent(body), " " * 16)))


CORRECT_PLAIN = adamw('''
    p.mul_(1 - lr * wd)
    m.mul_(b1).add_((1 - b1) * g)
    v.mul_(b2).add_((1 - b2) * g * g)
    m_hat = m / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    p.sub_(lr * m_hat / (v_hat.sqrt() + eps))
''')

CORRECT_FLOAT64 = adamw('''
    p64, g64 = p.double(), g.double()
    p64 = p64 - lr * wd * p64
    m.copy_(b1 * m.double() + (1 - b1) * g64)
    v.copy_(b2 * v.double() + (1 - b2) * g64 ** 2)
    update = (m.double() / (1 - b1 ** t)) / ((v.double() / (1 - b2 ** t)).sqrt() + eps)
    p.copy_(p64 - lr * update)
''')

# Kingma & Ba's Algorithm 1, "efficient" form (Keras' Adam): eps-hat added to sqrt(v), the step
# size folds in both corrections. A published convention, accepted.
CORRECT_EPS_HAT = adamw('''
    p.mul_(1 - lr * wd)
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    p.addcdiv_(m, v.sqrt() + eps, value=-alpha)
''')

CORRECT_DECAY_IN_UPDATE = adamw('''
    m.lerp_(g, 1 - b1)
    v.lerp_(g * g, 1 - b2)
    update = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps) + wd * p
    p.add_(update, alpha=-lr)
''')

COUPLED_L2 = adamw('''
    g = g + wd * p
    m.mul_(b1).add_((1 - b1) * g)
    v.mul_(b2).add_((1 - b2) * g * g)
    p.sub_(lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps))
''')

NO_BIAS_CORRECTION = adamw('''
    p.mul_(1 - lr * wd)
    m.mul_(b1).add_((1 - b1) * g)
    v.mul_(b2).add_((1 - b2) * g * g)
    p.sub_(lr * m / (v.sqrt() + eps))
''')

EPS_INSIDE = adamw('''
    p.mul_(1 - lr * wd)
    m.mul_(b1).add_((1 - b1) * g)
    v.mul_(b2).add_((1 - b2) * g * g)
    p.sub_(lr * (m / (1 - b1 ** t)) / torch.sqrt(v / (1 - b2 ** t) + eps))
''')

IGNORES_GROUP_LR = learner_class('''
class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.lr = lr  # kept for the update

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            (b1, b2), eps, wd = group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                t, m, v, g = state["t"], state["m"], state["v"], p.grad
                p.mul_(1 - self.lr * wd)
                m.mul_(b1).add_((1 - b1) * g)
                v.mul_(b2).add_((1 - b2) * g * g)
                p.sub_(self.lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps))
''')

STEP_AS_ATTRIBUTE = learner_class('''
class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.t = 0  # one step counter for the whole optimiser

    @torch.no_grad()
    def step(self, closure=None):
        self.t += 1
        t = self.t
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(m=torch.zeros_like(p), v=torch.zeros_like(p))
                m, v, g = state["m"], state["v"], p.grad
                p.mul_(1 - lr * wd)
                m.mul_(b1).add_((1 - b1) * g)
                v.mul_(b2).add_((1 - b2) * g * g)
                p.sub_(lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps))
''')


def test_adamw_reference_passes():
    ns = {}
    exec(REGISTRY["check_adamw"].reference, ns)  # noqa: S102
    result = check_adamw(ns["AdamW"])
    assert result.passed and result.points == 4, result.message


@pytest.mark.parametrize("impl", [CORRECT_PLAIN, CORRECT_FLOAT64, CORRECT_EPS_HAT, CORRECT_DECAY_IN_UPDATE],
                         ids=["plain", "float64", "kingma_eps_hat", "decay_in_update"])
def test_adamw_accepts(impl):
    result = check_adamw(impl)
    assert result.passed, (result.message, result.detail)


def test_adamw_accepts_a_foreach_version():
    impl = learner_class('''
    class AdamW(torch.optim.Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
            super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                ps = [p for p in group["params"] if p.grad is not None]
                for p in ps:
                    if "step" not in self.state[p]:
                        self.state[p].update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p),
                                             exp_avg_sq=torch.zeros_like(p))
                states = [self.state[p] for p in ps]
                grads = [p.grad for p in ps]
                ms, vs = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
                b1, b2 = group["betas"]
                torch._foreach_mul_(ps, 1 - group["lr"] * group["weight_decay"])
                torch._foreach_lerp_(ms, grads, 1 - b1)
                torch._foreach_mul_(vs, b2)
                torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
                for p, s, m, v in zip(ps, states, ms, vs):
                    s["step"] += 1
                    t = s["step"].item()
                    denom = (v.sqrt() / math.sqrt(1 - b2 ** t)).add_(group["eps"])
                    p.addcdiv_(m, denom, value=-group["lr"] / (1 - b1 ** t))
    ''')
    result = check_adamw(impl)
    assert result.passed, (result.message, result.detail)


@pytest.mark.parametrize("impl,key", [(COUPLED_L2, "coupled_l2"), (NO_BIAS_CORRECTION, "no_bias_correction"),
                                      (EPS_INSIDE, "eps_inside_sqrt"), (IGNORES_GROUP_LR, "ignores_group_settings"),
                                      (STEP_AS_ATTRIBUTE, "step_not_in_state")])
def test_adamw_diagnoses(impl, key):
    assert_diagnosed(check_adamw(impl), key)


def test_adamw_named_all_tested():
    assert_all_tested("check_adamw", {"coupled_l2", "no_bias_correction", "eps_inside_sqrt",
                                      "ignores_group_settings", "step_not_in_state"})


def test_adamw_stub_is_not_attempted():
    stub = learner_class('''
    class AdamW(torch.optim.Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
            super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

        @torch.no_grad()
        def step(self, closure=None):
            raise NotImplementedError()
    ''')
    assert_not_attempted(check_adamw(stub))


def test_adamw_refuses_delegation():
    subclass = learner_class('''
    class AdamW(torch.optim.AdamW):
        pass
    ''')
    assert_delegates(check_adamw(subclass), "torch.optim.AdamW")
    aliased = learner_class('''
    TorchAdamW = torch.optim.AdamW  # an alias at module level

    class AdamW(torch.optim.Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
            super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
            self.inner = TorchAdamW(self.param_groups)

        def step(self, closure=None):
            return self.inner.step(closure)
    ''')
    assert_delegates(check_adamw(aliased), "torch.optim.AdamW")
    functional = learner_class('''
    class AdamW(torch.optim.Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
            super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

        @torch.no_grad()
        def step(self, closure=None):
            from torch.optim.adamw import adamw
            for group in self.param_groups:
                ps = [p for p in group["params"] if p.grad is not None]
                for p in ps:
                    if not self.state[p]:
                        self.state[p].update(step=torch.tensor(0.0), m=torch.zeros_like(p), v=torch.zeros_like(p))
                b1, b2 = group["betas"]
                adamw(ps, [p.grad for p in ps], [self.state[p]["m"] for p in ps], [self.state[p]["v"] for p in ps],
                      [], [self.state[p]["step"] for p in ps], foreach=False, amsgrad=False, beta1=b1, beta2=b2,
                      lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)
    ''')
    assert_delegates(check_adamw(functional), "torch.optim.adamw")


def test_adamw_without_no_grad_is_explained():
    impl = learner_class(ADAMW_TEMPLATE.replace("    @torch.no_grad()\n", "").format(body='''                p.mul_(1 - lr * wd)
                m.mul_(b1).add_((1 - b1) * g)
                v.mul_(b2).add_((1 - b2) * g * g)
                p.sub_(lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps))'''))
    result = check_adamw(impl)
    assert not result.passed and "@torch.no_grad()" in result.message, result.message


@pytest.mark.parametrize("impl,fragment", [
    (CORRECT_PLAIN([torch.nn.Parameter(torch.ones(1))]), "pass the class itself"),
    (learner_class("class AdamW:\n    def __init__(self, params, **kw):\n        self.params = list(params)\n"),
     "subclass of torch.optim.Optimizer"),
    (adamw("p.fill_(float('nan'))"), "NaN"),
    (adamw("raise ValueError('oops')"), "your code raised ValueError: oops"),
    (adamw("p.sub_(lr * torch.ones(3))"), "your code raised RuntimeError"),
])
def test_adamw_bad_code_gets_a_one_line_verdict(impl, fragment):
    result = check_adamw(impl)
    assert not result.passed and result.points == 0 and fragment in result.message, result.message
    assert "checker itself" not in result.message and "\n" not in result.message


# ================================================================== param_groups
def groups_fn(source: str):
    return learner_class(source, "param_groups")


PG_NDIM = groups_fn('''
def param_groups(model, weight_decay):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
''')

PG_BY_NAME = groups_fn('''
def param_groups(model, weight_decay):  # Hugging Face's way: by name, biases and norms excluded
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if name.endswith("bias") or "norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
''')

PG_MINGPT = groups_fn('''
def param_groups(model, weight_decay):  # minGPT's way: embeddings are not decayed either, no-decay first
    no_decay_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim < 2 or id(p) in no_decay_ids else decay).append(p)
    return ({"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay})
''')

PG_EVERYTHING = groups_fn('''
def param_groups(model, weight_decay):
    return [{"params": list(model.parameters()), "weight_decay": weight_decay}, {"params": [], "weight_decay": 0.0}]
''')

PG_SWAPPED = groups_fn('''
def param_groups(model, weight_decay):
    decay = [p for p in model.parameters() if p.ndim == 1]
    no_decay = [p for p in model.parameters() if p.ndim != 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
''')

PG_NO_KEY = groups_fn('''
def param_groups(model, weight_decay):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay}]
''')

PG_TIED_TWICE = groups_fn('''
def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
''')


def test_param_groups_reference_passes():
    ns = {}
    exec(REGISTRY["check_param_groups"].reference, ns)  # noqa: S102
    assert check_param_groups(ns["param_groups"]).passed


@pytest.mark.parametrize("impl", [PG_NDIM, PG_BY_NAME, PG_MINGPT], ids=["ndim", "hf_by_name", "mingpt_embedding"])
def test_param_groups_accepts(impl):
    result = check_param_groups(impl)
    assert result.passed, (result.message, result.detail)


@pytest.mark.parametrize("impl,key", [(PG_EVERYTHING, "decay_everything"), (PG_SWAPPED, "groups_swapped"),
                                      (PG_NO_KEY, "no_decay_group_default"), (PG_TIED_TWICE, "tied_counted_twice")])
def test_param_groups_diagnoses(impl, key):
    assert_diagnosed(check_param_groups(impl), key)


def test_param_groups_named_all_tested_and_stub():
    assert_all_tested("check_param_groups", {"decay_everything", "groups_swapped", "no_decay_group_default",
                                             "tied_counted_twice"})
    assert_not_attempted(check_param_groups(groups_fn(
        "def param_groups(model, weight_decay):\n    raise NotImplementedError()\n")))


def test_param_groups_refuses_course_lib():
    impl = groups_fn('''
from course_lib.training import param_groups as course_groups

def param_groups(model, weight_decay):
    return course_groups(model, weight_decay)
''')
    assert_delegates(check_param_groups(impl), "course_lib.training.param_groups")


@pytest.mark.parametrize("source,fragment", [
    ("def param_groups(model, weight_decay):\n    pass\n", "list of dicts"),
    ("def param_groups(model, weight_decay):\n    return list(model.parameters())\n", "list of dicts"),
    ("def param_groups(model, weight_decay):\n    return [{'params': [p for p in model.parameters() if p.ndim >= 2],"
     " 'weight_decay': weight_decay}]\n", "in no group"),
    ("def param_groups(model, weight_decay):\n    return [{'params': [p for p in model.parameters() if p.ndim >= 2],"
     " 'weight_decay': 0.1}, {'params': [p for p in model.parameters() if p.ndim < 2], 'weight_decay': 0.0}]\n",
     "expected 0.05"),
    ("def param_groups(model, weight_decay):\n    return [{'params': [torch.zeros(2)], 'weight_decay': 0.0}]\n",
     "not one of the model's parameters"),
])
def test_param_groups_bad_output_gets_a_verdict(source, fragment):
    result = check_param_groups(groups_fn(source))
    assert not result.passed and fragment in result.message, result.message
    assert "checker itself" not in result.message


# ================================================================== train loop
def loop(**replace: str):
    """The reference's functions, with some replaced by a learner's versions; returns `train`
    (the check finds evaluate, save_checkpoint and load_checkpoint next to it, by name)."""
    ns = {"__name__": "learner_notebook"}
    exec(TRAIN_LOOP_SOLUTION, ns)  # noqa: S102
    for source in replace.values():
        exec(textwrap.dedent(source), ns)  # noqa: S102
    return ns["train"]


TRAIN_ZERO_AFTER = '''
def train(model, optimizer, get_batch, steps, lr_at, ckpt_path=None, ckpt_every=100, clip=1.0):
    step = load_checkpoint(ckpt_path, model, optimizer) if ckpt_path and os.path.exists(ckpt_path) else 0
    losses = []
    while step < steps:
        x, y = get_batch(step)
        loss = cross_entropy(model(x), y)
        loss.backward()
        clip_grad_norm(model.parameters(), clip)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        step += 1
        if ckpt_path and (step % ckpt_every == 0 or step == steps):
            save_checkpoint(ckpt_path, model, optimizer, step)
    return losses
'''

# saves at the *start* of every ckpt_every-th step (the state before it runs): another convention
TRAIN_SAVE_BEFORE = '''
def train(model, optimizer, get_batch, steps, lr_at, ckpt_path=None, ckpt_every=100, clip=1.0):
    start = load_checkpoint(ckpt_path, model, optimizer) if ckpt_path and os.path.exists(ckpt_path) else 0
    losses = []
    for step in range(start, steps):
        if ckpt_path and step > start and step % ckpt_every == 0:
            save_checkpoint(ckpt_path, model, optimizer, step)
        optimizer.zero_grad()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        x, y = get_batch(step)
        loss = cross_entropy(model(x), y)
        loss.backward()
        clip_grad_norm(model.parameters(), clip)
        optimizer.step()
        losses.append(loss.item())
    if ckpt_path:
        save_checkpoint(ckpt_path, model, optimizer, steps)
    return losses
'''

EVALUATE_TOKEN_WEIGHTED = '''
@torch.no_grad()
def evaluate(model, batches):
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        total += cross_entropy(model(x), y).item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count
'''

CKPT_AS_TUPLE = '''
def save_checkpoint(path, model, optimizer, step):
    torch.save((model.state_dict(), optimizer.state_dict(), torch.tensor(step)), path)


def load_checkpoint(path, model, optimizer):
    model_state, optimizer_state, step = torch.load(path)
    model.load_state_dict(model_state)
    optimizer.load_state_dict(optimizer_state)
    return int(step)
'''


def test_train_loop_reference_passes():
    result = check_train_loop(loop())
    assert result.passed and result.points == 4, (result.message, result.detail)


@pytest.mark.parametrize("parts", [dict(train=TRAIN_ZERO_AFTER), dict(train=TRAIN_SAVE_BEFORE),
                                   dict(evaluate=EVALUATE_TOKEN_WEIGHTED), dict(ckpt=CKPT_AS_TUPLE)],
                         ids=["zero_grad_after_step", "save_before_step", "token_weighted_eval", "tuple_checkpoint"])
def test_train_loop_accepts(parts):
    result = check_train_loop(loop(**parts))
    assert result.passed, (result.message, result.detail)


EVAL_NO_EVAL_MODE = '''
def evaluate(model, batches):
    with torch.no_grad():
        losses = [cross_entropy(model(x), y).item() for x, y in batches]
    return sum(losses) / len(losses)
'''

EVAL_NO_NO_GRAD = '''
def evaluate(model, batches):
    model.eval()
    losses = [cross_entropy(model(x), y).item() for x, y in batches]
    model.train()
    return sum(losses) / len(losses)
'''

EVAL_STAYS_EVAL = '''
def evaluate(model, batches):
    model.eval()
    with torch.no_grad():
        losses = [cross_entropy(model(x), y).item() for x, y in batches]
    return sum(losses) / len(losses)
'''

SAVE_MODEL_ONLY = '''
def save_checkpoint(path, model, optimizer, step):
    torch.save({"model": model.state_dict(), "step": step}, path)


def load_checkpoint(path, model, optimizer):
    ckpt = torch.load(path)
    model.load_state_dict(ckpt["model"])
    return ckpt["step"]
'''

SAVE_NO_STEP = '''
def save_checkpoint(path, model, optimizer, step):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)


def load_checkpoint(path, model, optimizer):
    ckpt = torch.load(path)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
'''

TRAIN_RESTARTS_AT_ZERO = '''
def train(model, optimizer, get_batch, steps, lr_at, ckpt_path=None, ckpt_every=100, clip=1.0):
    if ckpt_path is not None and os.path.exists(ckpt_path):
        load_checkpoint(ckpt_path, model, optimizer)
    losses = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        x, y = get_batch(step)
        loss = cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        clip_grad_norm(model.parameters(), clip)
        optimizer.step()
        losses.append(loss.item())
        if ckpt_path is not None and ((step + 1) % ckpt_every == 0 or step + 1 == steps):
            save_checkpoint(ckpt_path, model, optimizer, step + 1)
    return losses
'''


def train_without(line: str) -> str:
    """The reference train with one line removed, as a learner who forgot it wrote it."""
    start = TRAIN_LOOP_SOLUTION.index("def train(")
    source = TRAIN_LOOP_SOLUTION[start:]
    assert line in source
    return source.replace(line, "")


@pytest.mark.parametrize("parts,key", [
    (dict(evaluate=EVAL_NO_EVAL_MODE), "evaluate_train_mode"),
    (dict(evaluate=EVAL_NO_NO_GRAD), "evaluate_tracks_grad"),
    (dict(evaluate=EVAL_STAYS_EVAL), "evaluate_leaves_eval_mode"),
    (dict(ckpt=SAVE_MODEL_ONLY), "optimizer_state_not_saved"),
    (dict(ckpt=SAVE_NO_STEP), "step_not_saved"),
    (dict(train=TRAIN_RESTARTS_AT_ZERO), "step_not_saved"),
    (dict(train=train_without("        optimizer.zero_grad()\n")), "no_zero_grad"),
    (dict(train=train_without('            group["lr"] = lr\n').replace(
        "for group in optimizer.param_groups:\n", "for group in optimizer.param_groups:\n            pass\n")),
     "lr_not_set"),
    (dict(train=train_without("        clip_grad_norm(model.parameters(), clip)\n")), "no_clipping"),
], ids=["eval_mode", "no_grad", "left_in_eval", "optimizer_not_saved", "step_not_saved", "restarts_at_zero",
        "no_zero_grad", "lr_not_set", "no_clipping"])
def test_train_loop_diagnoses(parts, key):
    assert_diagnosed(check_train_loop(loop(**parts)), key)


def test_train_loop_named_all_tested():
    assert_all_tested("check_train_loop", {
        "evaluate_train_mode", "evaluate_tracks_grad", "evaluate_leaves_eval_mode", "optimizer_state_not_saved",
        "step_not_saved", "no_zero_grad", "lr_not_set", "no_clipping"})


def test_train_loop_stubs_are_not_attempted():
    stub = "def {name}(*args, **kwargs):\n    raise NotImplementedError()\n"
    for name in ("evaluate", "save_checkpoint", "train"):
        assert_not_attempted(check_train_loop(loop(stub=stub.format(name=name))))


def test_train_loop_only_periodic_checkpoints_matter_after_a_crash():
    only_at_end = TRAIN_LOOP_SOLUTION[TRAIN_LOOP_SOLUTION.index("def train("):].replace(
        "(done % ckpt_every == 0 or done == steps)", "done == steps")
    result = check_train_loop(loop(train=only_at_end))
    assert not result.passed and "after the crash" in result.message, result.message


def test_train_loop_refuses_delegation():
    uses_torch_ce = '''
import torch.nn.functional as F

def cross_entropy(logits, targets, ignore_index=-100):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index)
'''
    assert_delegates(check_train_loop(loop(ce=uses_torch_ce)), "torch.nn.functional.cross_entropy")
    uses_torch_clip = '''
clip_grad_norm = torch.nn.utils.clip_grad_norm_  # an alias
'''
    assert_delegates(check_train_loop(loop(clip=uses_torch_clip)), "torch.nn.utils.clip_grad_norm_")


@pytest.mark.parametrize("parts,fragment", [
    (dict(train="def train(*args, **kwargs):\n    return None\n"), "list of the losses"),
    (dict(evaluate="def evaluate(model, batches):\n    model.eval()\n    with torch.no_grad():\n"
                   "        losses = [cross_entropy(model(x), y).item() for x, y in batches]\n    model.train()\n"),
     "did you forget a `return`"),
    (dict(evaluate="def evaluate(model, batches):\n    return 1 / 0\n"), "your code raised ZeroDivisionError"),
    (dict(save="def save_checkpoint(path, model, optimizer, step):\n    pass\n"), "wrote no file"),
])
def test_train_loop_bad_code_gets_a_verdict(parts, fragment):
    result = check_train_loop(loop(**parts))
    assert not result.passed and fragment in result.message, result.message
    assert "checker itself" not in result.message


def test_train_loop_needs_the_other_functions_next_to_train():
    ns = {"__name__": "lonely"}
    exec("def train(model, optimizer, get_batch, steps, lr_at, ckpt_path=None, ckpt_every=100, clip=1.0):\n"
         "    return []\n", ns)  # noqa: S102
    result = check_train_loop(ns["train"])
    assert not result.passed and "evaluate" in result.message, result.message


def test_the_reference_task_learns_and_clips():
    """The check's task is learnable (the loss falls) and its clipping is active, so the
    no-clipping misconception is visible."""
    from course_lib.checks import track_training as tt
    model = tt._CharLM(seed=6)
    opt = tt._optimizer(model)
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording(params, max_norm):
        norms.append(float(clip(params, max_norm)))
    torch.nn.utils.clip_grad_norm_ = recording
    try:
        losses = tt._reference_train(model, opt, tt._N_STEPS)
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4
    assert sum(n > tt._CLIP for n in norms) >= 3
