"""Checks for exercise 13's scaling-law parts: a power law with a known floor fitted on log-log
axes (`fit_power_law`), the floor fitted too by Gauss-Newton (`fit_scaling_law`), Hoffmann et
al. 2022's L(N, D) = E + A/N^α + B/D^β fitted by Levenberg-Marquardt (`fit_chinchilla`), and the
compute-optimal split of a FLOP budget under that law (`compute_optimal`).

The references are independent of the exercise's method: `numpy.polyfit` for the straight line,
`scipy.optimize.least_squares` (Levenberg-Marquardt) for the nonlinear fit, and a brute-force
search over N on ever finer grids for the optimum. Each misconception is a small re-creation of
the mistake; the check names the one whose numbers equal the learner's on every case."""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .cases import Case
from .core import Mismatch, assert_unmodified, call_learner, register, snapshot
from .track_tensors import isolated

RTOL, ATOL = 1e-6, 1e-9
FORBID = ("numpy.polyfit", "numpy.polynomial", "scipy.optimize", "scipy.stats", "scipy.odr",
          "course_lib.experiments.fit_power_law", "course_lib.experiments.compute_optimal", "course_lib.checks")

FIT_POWER_LAW_CODE = '''
def fit_power_law(n, loss, E=0.0):
    x = torch.log(n)  # (K,) log N
    y = torch.log(loss - E)  # (K,) log(L - E): a straight line in x if L = E + A·N^(-alpha)
    dx, dy = x - x.mean(), y - y.mean()
    slope = (dx * dy).sum() / (dx * dx).sum()  # least squares: cov(x, y) / var(x)
    intercept = y.mean() - slope * x.mean()  # the line goes through the means
    return math.exp(intercept), -slope.item()  # A = e^intercept (natural logs throughout), alpha = -slope
'''

FIT_SCALING_LAW_CODE = '''
def fit_scaling_law(n, loss, steps=20):
    log_n, log_loss = torch.log(n), torch.log(loss)  # (K,) each
    E = loss.min().item() / 2  # start with the floor halfway down to zero ...
    A, alpha = fit_power_law(n, loss, E)  # ... and the straight line that floor gives
    theta = torch.tensor([E, math.log(A), alpha], dtype=torch.float64)  # (3,): E, log A, alpha
    for _ in range(steps):
        E, log_A, alpha = theta
        power = torch.exp(log_A - alpha * log_n)  # (K,) A·N^(-alpha)
        model = E + power  # (K,) the predicted loss
        r = torch.log(model) - log_loss  # (K,) residuals in log space
        J = torch.stack([1 / model, power / model, -power * log_n / model], dim=1)  # (K, 3) dr/dtheta
        theta = theta - torch.linalg.solve(J.T @ J, J.T @ r)  # Gauss-Newton: (3, 3) normal equations
    E, log_A, alpha = theta.tolist()
    return E, math.exp(log_A), alpha
'''

FIT_CHINCHILLA_CODE = '''
def fit_chinchilla(n, d, loss, steps=100):
    log_n, log_d, log_loss = torch.log(n), torch.log(d), torch.log(loss)  # (K,) each
    # theta = (e, a, b, alpha, beta) with E = e^e, A = e^a, B = e^b
    theta = torch.tensor([math.log(loss.min().item() / 2), 5.0, 5.0, 0.3, 0.3], dtype=torch.float64)

    def residuals(theta):
        e, a, b, alpha, beta = theta
        terms = torch.stack([e.expand_as(log_n), a - alpha * log_n, b - beta * log_d], dim=1)  # (K, 3) logs of the terms
        return torch.logsumexp(terms, dim=1) - log_loss, torch.softmax(terms, dim=1)  # (K,), (K, 3) shares

    damping = 1e-3
    r, w = residuals(theta)
    for _ in range(steps):
        J = torch.stack([w[:, 0], w[:, 1], w[:, 2], -w[:, 1] * log_n, -w[:, 2] * log_d], dim=1)  # (K, 5) dr/dtheta
        JtJ = J.T @ J  # (5, 5)
        step = torch.linalg.solve(JtJ + damping * torch.diag(JtJ.diagonal()), J.T @ r)  # (5,)
        r_new, w_new = residuals(theta - step)
        if (r_new ** 2).sum() < (r ** 2).sum():  # better: take it, and trust the linearisation more
            theta, r, w, damping = theta - step, r_new, w_new, damping / 3
        else:  # worse: stay, and try a shorter step, closer to the gradient's direction
            damping = damping * 3
    e, a, b, alpha, beta = theta.tolist()
    return math.exp(e), math.exp(a), math.exp(b), alpha, beta
'''

COMPUTE_OPTIMAL_CODE = '''
def compute_optimal(C, E, A, B, alpha, beta):
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    a, b = beta / (alpha + beta), alpha / (alpha + beta)  # a + b = 1: N and D share the budget
    N = G * (C / 6) ** a  # C = 6·N·D (2 FLOPs per parameter per token forward, 4 backward)
    D = (C / 6) ** b / G  # = C / (6·N)
    return N, D, E + A / N ** alpha + B / D ** beta
'''

IMPORTS = "import math\n\nimport torch\n"


def solution_text(*pieces: str) -> str:
    """A printed solution: the imports, then the pieces in order (earlier parts first)."""
    return IMPORTS + "".join("\n" + p for p in pieces)


# ------------------------------------------------------------------ grading tuples of numbers
def _numbers(out, k: int, what: str) -> tuple[float, ...]:
    """The learner's k returned numbers as floats, or a Mismatch that says what came back instead."""
    if out is None:
        raise Mismatch(f"{what}: got None (did you forget a `return`?)")
    if not isinstance(out, (tuple, list)) or len(out) != k:
        got = f"{type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list)) else type(out).__name__
        raise Mismatch(f"{what} should be a tuple of {k} numbers, got {got}")
    values = []
    for v in out:
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()  # a 0-d tensor is a number too
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise Mismatch(f"{what} should hold {k} numbers, got a {type(v).__name__} among them")
        if not math.isfinite(v):
            raise Mismatch(f"{what} holds {v}, expected finite numbers")
        values.append(float(v))
    return tuple(values)


def _close(a: tuple, b: tuple, rtol: float = RTOL) -> bool:
    return all(math.isclose(x, y, rel_tol=rtol, abs_tol=ATOL) for x, y in zip(a, b))


def _grade_tuples(learner, cases, reference, variants, names: tuple[str, ...], what: str, rtol: float = RTOL,
                  arg_names: tuple[str, ...] = ("n", "loss")) -> int:
    """Like grade_function, for functions that return a tuple of numbers (one per name), each within
    `rtol` of the reference's."""
    if not callable(learner):
        raise Mismatch(f"expected a function, got {type(learner).__name__}")
    refs, outs = [], []
    for case in cases:
        refs.append(reference(*case.args))
        before = snapshot(case.args)
        out = call_learner(learner, *case.args)
        try:
            assert_unmodified(case.args, before, arg_names)
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {case.label}", "mutates_input") from None
        try:
            outs.append(_numbers(out, len(names), what))
        except Mismatch as mm:
            raise Mismatch(mm.reason, f"case: {case.label}") from None
    for case, out, ref in zip(cases, outs, refs):
        if not _close(out, ref, rtol):
            got = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, out))
            want = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, ref))
            raise Mismatch(f"got {got}; expected {want}", f"case: {case.label}", _diagnose(outs, cases, refs, variants, rtol))
    return len(cases)


def _diagnose(outs, cases, refs, variants, rtol: float) -> str | None:
    for key, fn in variants.items():
        try:
            theirs = [fn(*c.args) for c in cases]
        except Exception:  # noqa: BLE001 - a variant that cannot run on a case just doesn't match
            continue
        if all(_close(t, r, rtol) for t, r in zip(theirs, refs)):
            continue  # equal to the reference here: cannot be told apart
        if all(_close(o, t, rtol) for o, t in zip(outs, theirs)):
            return key
    return None


def _points(seed: int, E: float, A: float, alpha: float, lo: float, hi: float, k: int, noise: float):
    """k model sizes from lo to hi (even on a log axis) and their losses E + A·N^(-alpha), each
    times exp(noise·z): float64 tensors, like the lesson's (N, loss) pairs."""
    g = torch.Generator().manual_seed(seed)
    n = torch.logspace(math.log10(lo), math.log10(hi), k, dtype=torch.float64)  # (K,)
    z = torch.randn(k, generator=g, dtype=torch.float64)  # (K,)
    return n, (E + A * n ** -alpha) * torch.exp(noise * z)  # (K,) each


# ------------------------------------------------------------------ part 2: a power law above a known floor
def _polyfit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def fit_power_law_reference(n, loss, E=0.0):
    """numpy.polyfit through (ln N, ln(L - E)): L - E = A·N^(-alpha) -> (A, alpha)."""
    slope, intercept = _polyfit_line(np.log(n.numpy()), np.log(loss.numpy() - E))
    return math.exp(intercept), -slope


def _power_law_variant(n, loss, E=0.0, *, kind):
    x, y = np.log(n.numpy()), np.log(loss.numpy() - (0.0 if kind == "floor_ignored" else E))
    if kind == "swapped_axes":  # ln N regressed on ln(L - E), then solved for ln(L - E)
        m, c = _polyfit_line(y, x)
        return math.exp(-c / m), -1 / m
    if kind == "log10_intercept":  # the line fitted on log10 axes, then A = e^intercept
        slope, intercept = _polyfit_line(x / math.log(10), y / math.log(10))
        return math.exp(intercept), -slope
    slope, intercept = _polyfit_line(x, y)
    if kind == "alpha_sign":
        return math.exp(intercept), slope
    if kind == "intercept_not_exponentiated":
        return intercept, -slope
    return math.exp(intercept), -slope  # floor_ignored


POWER_LAW_MISCONCEPTIONS = {
    "floor_ignored": "the floor E was not subtracted: the straight line on log-log axes is ln(L - E) against "
                     "ln N; ln L itself bends towards ln E and gives a smaller exponent.",
    "log10_intercept": "the line was fitted with base-10 logarithms but A was taken as e^intercept. The slope is "
                       "the same in any base, the intercept is not: use one base throughout (torch.log is the "
                       "natural log, then A = e^intercept; with log10, A = 10^intercept).",
    "alpha_sign": "alpha came back negative: the loss falls as N grows, so the fitted slope is negative and "
                  "alpha = -slope (L - E = A·N^(-alpha) with alpha > 0).",
    "intercept_not_exponentiated": "the intercept is ln A, not A: return math.exp(intercept).",
    "swapped_axes": "the regression ran the wrong way round (ln N on ln(L - E), as np.polyfit(y, x, 1) would). "
                    "Least squares treats x as exact and y as noisy: slope = cov(x, y) / var(x) with x = ln N.",
    "mutates_input": "an input tensor (n or loss) was changed in place; compute new tensors instead.",
}


def _power_law_cases() -> list[Case]:
    cases = []
    for seed, (E, A, alpha, lo, hi, k, noise) in enumerate([
            (1.69, 406.4, 0.34, 1e7, 1e10, 6, 0.01),  # Hoffmann et al.'s N term, floor known
            (1.2, 30.0, 0.3, 1e4, 1e7, 8, 0.02),
            (0.0, 11.0, 0.076, 1e5, 1e11, 7, 0.003),  # a pure power law: E = 0 (Kaplan's form)
            (2.5, 2.0, 0.5, 1e2, 1e4, 3, 0.05)]):
        n, loss = _points(seed, E, A, alpha, lo, hi, k, noise)
        cases.append(Case(f"{k} sizes from {lo:.0e} to {hi:.0e}, E={E}, losses from A={A}, alpha={alpha} with "
                          f"{noise:.1%} noise", (n, loss, E)))
    return cases


@register("check_fit_power_law", points=2, minutes=15, reference=solution_text(FIT_POWER_LAW_CODE),
          misconceptions=POWER_LAW_MISCONCEPTIONS, forbid=FORBID,
          hint="Take logarithms of both sides of L - E = A·N^(-alpha): what kind of curve is ln(L - E) against ln N?",
          idea="x = ln N, y = ln(loss - E); slope = sum((x - x̄)(y - ȳ)) / sum((x - x̄)²), intercept = ȳ - slope·x̄; "
               "return (e^intercept, -slope) as floats.")
@isolated
def check_fit_power_law(learner):
    variants = {k: (lambda *a, k=k: _power_law_variant(*a, kind=k))
                for k in POWER_LAW_MISCONCEPTIONS if k != "mutates_input"}
    return _grade_tuples(learner, _power_law_cases(), fit_power_law_reference, variants, ("A", "alpha"),
                         "fit_power_law(n, loss, E)")


# ------------------------------------------------------------------ part 3: the floor fitted too
def _least_squares(residual, x0):
    from scipy.optimize import least_squares  # scikit-learn's dependency, imported only when checking
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a wild trial step is just rejected
        fit = least_squares(residual, x0, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=20000)
    return fit.x


def _cost(residual, theta) -> float:
    with np.errstate(over="ignore", invalid="ignore"):
        cost = float(np.sum(residual(theta) ** 2))
    return cost if math.isfinite(cost) else math.inf


def fit_scaling_law_reference(n, loss, steps=20, *, space="log"):
    """The least-squares fit of ln L = ln(E + A·N^(-alpha)) over (E, ln A, alpha) by scipy's
    Levenberg-Marquardt, the best of three starts (E = 0, min(loss)/2 and 0.9·min(loss), each with
    the straight line that floor gives). `space="linear"` fits L itself instead (a misconception)."""
    log_n, loss_np = np.log(n.numpy()), loss.numpy()
    target = np.log(loss_np) if space == "log" else loss_np

    def residual(theta):
        model = theta[0] + np.exp(theta[1] - theta[2] * log_n)
        return (np.log(model) if space == "log" else model) - target

    best = None
    for f in (0.0, 0.5, 0.9):
        A, alpha = fit_power_law_reference(n, loss, f * loss_np.min())
        theta = _least_squares(residual, [f * loss_np.min(), math.log(A), alpha])
        cost = _cost(residual, theta)
        if best is None or cost < best[0]:
            best = (cost, theta)
    E, log_A, alpha = best[1]
    return float(E), math.exp(log_A), float(alpha)


def _floor_not_fitted(n, loss, steps=20):
    """Gauss-Newton without the E column: E stays at its start, min(loss)/2; A and alpha are fitted."""
    log_n, log_loss = np.log(n.numpy()), np.log(loss.numpy())
    E = float(loss.min()) / 2
    A, alpha = fit_power_law_reference(n, loss, E)
    log_A, alpha = _least_squares(lambda t: np.log(E + np.exp(t[0] - t[1] * log_n)) - log_loss,
                                  [math.log(A), alpha])
    return E, math.exp(log_A), float(alpha)


SCALING_LAW_MISCONCEPTIONS = {
    "linear_space": "the residuals were taken in linear space (E + A·N^(-alpha) - L). Losses of large and small "
                    "models are then weighed by their size, and noise that is a percentage of the loss pulls the "
                    "fit towards the worst models. Fit in log space, r = ln(E + A·N^(-alpha)) - ln L, as "
                    "Hoffmann et al. do (their Eq. 10 fits log L).",
    "floor_not_fitted": "E stayed at its starting value min(loss)/2: the Jacobian needs a column for E too, "
                        "dr/dE = 1 / (E + A·N^(-alpha)), and every step updates all three parameters.",
    "mutates_input": "an input tensor (n or loss) was changed in place; compute new tensors instead.",
}


def _scaling_law_cases() -> list[Case]:
    cases = []
    for seed, (E, A, alpha, lo, hi, k, noise) in enumerate([
            (1.69, 406.4, 0.34, 1e6, 1e10, 9, 0.01),  # Hoffmann et al. 2022's E, A and alpha
            (1.2, 30.0, 0.3, 1e4, 1e7, 7, 0.02),
            (2.0, 5.0, 0.1, 1e3, 1e9, 12, 0.005),  # a small exponent over six decades
            (0.5, 1000.0, 0.5, 1e5, 1e8, 5, 0.0)]):  # exact points: the fit must recover the law
        n, loss = _points(100 + seed, E, A, alpha, lo, hi, k, noise)
        cases.append(Case(f"{k} sizes from {lo:.0e} to {hi:.0e}, losses from E={E}, A={A}, alpha={alpha} with "
                          f"{noise:.1%} noise", (n, loss)))
    return cases


@register("check_fit_scaling_law", points=4, minutes=35,
          reference=solution_text(FIT_POWER_LAW_CODE, FIT_SCALING_LAW_CODE),
          misconceptions=SCALING_LAW_MISCONCEPTIONS, forbid=FORBID,
          hint="Gauss-Newton linearises the residuals around the current parameters and solves a small linear "
               "least-squares problem for the step. Which three derivatives does that need?",
          idea="theta = (E, ln A, alpha), r_i = ln(E + A·N_i^(-alpha)) - ln L_i, with p_i = A·N_i^(-alpha) and "
               "M_i = E + p_i the Jacobian rows are (1/M_i, p_i/M_i, -p_i·ln N_i/M_i); each step solves "
               "(JᵀJ) δ = Jᵀr and sets theta = theta - δ. Start from E = min(loss)/2 and fit_power_law there.")
@isolated
def check_fit_scaling_law(learner):
    variants = {"linear_space": lambda n, loss: fit_scaling_law_reference(n, loss, space="linear"),
                "floor_not_fitted": _floor_not_fitted}
    return _grade_tuples(learner, _scaling_law_cases(), fit_scaling_law_reference, variants, ("E", "A", "alpha"),
                         "fit_scaling_law(n, loss)")


# ------------------------------------------------------------------ part 5: L(N, D), Hoffmann et al.'s approach 3
def fit_chinchilla_reference(n, d, loss, steps=100, *, space="log", swap=False):
    """The least-squares fit of ln L = LSE(e, a - alpha·ln N, b - beta·ln D) by scipy's Levenberg-Marquardt,
    the best of three starts. `space="linear"` fits L itself; `swap=True` puts N where D belongs."""
    if swap:
        n, d = d, n
    log_n, log_d, loss_np = np.log(n.numpy()), np.log(d.numpy()), loss.numpy()
    target = np.log(loss_np) if space == "log" else loss_np

    def residual(t):
        log_model = np.logaddexp(np.logaddexp(t[0], t[1] - t[3] * log_n), t[2] - t[4] * log_d)
        return (log_model if space == "log" else np.exp(log_model)) - target

    lowest = float(np.log(loss_np.min()))
    best = None
    for x0 in ([lowest - math.log(2), 5, 5, 0.3, 0.3], [lowest - 3, 3, 3, 0.5, 0.5], [lowest - 0.1, 7, 7, 0.2, 0.2]):
        theta = _least_squares(residual, x0)
        cost = _cost(residual, theta)
        if best is None or cost < best[0]:
            best = (cost, theta)
    e, a, b, alpha, beta = best[1]
    return math.exp(e), math.exp(a), math.exp(b), float(alpha), float(beta)


CHINCHILLA_MISCONCEPTIONS = {
    "linear_space": "the residuals were taken in linear space (L_model - L). Fit ln L: r = LSE(e, a - alpha·ln N, "
                    "b - beta·ln D) - ln L, Hoffmann et al.'s Eq. 10 (with least squares here instead of their "
                    "Huber loss).",
    "swapped_n_d": "N and D swapped places: A/N^alpha is the model-size term and B/D^beta the data term, so alpha "
                   "multiplies ln n and beta multiplies ln d.",
    "mutates_input": "an input tensor (n, d or loss) was changed in place; compute new tensors instead.",
}


def _grid_points(seed, E, A, B, alpha, beta, n_range, d_range, noise, k=5):
    """A k×k grid of (N, D) pairs (even on log axes) and the losses of L(N, D) at them, times exp(noise·z)."""
    g = torch.Generator().manual_seed(seed)
    N = torch.logspace(*n_range, k, dtype=torch.float64)  # (k,)
    D = torch.logspace(*d_range, k, dtype=torch.float64)  # (k,)
    n, d = (t.flatten() for t in torch.meshgrid(N, D, indexing="ij"))  # (k·k,) each
    z = torch.randn(n.shape, generator=g, dtype=torch.float64)  # (k·k,)
    return n, d, (E + A * n ** -alpha + B * d ** -beta) * torch.exp(noise * z)


def _chinchilla_cases() -> list[Case]:
    cases = []
    for seed, (law, n_range, d_range, noise) in enumerate([
            ((1.69, 406.4, 410.7, 0.34, 0.28), (7, 10), (9, 12), 0.01),  # Hoffmann et al.'s constants
            ((1.82, 482.0, 2085.0, 0.35, 0.37), (7, 10), (9, 12), 0.02),
            ((1.0, 50.0, 20.0, 0.25, 0.3), (5, 8), (6, 9), 0.005),
            ((2.0, 10.0, 30.0, 0.2, 0.15), (6, 9), (8, 11), 0.0)]):  # exact points: the law comes back
        E, A, B, alpha, beta = law
        cases.append(Case(f"5x5 grid of N from 1e{n_range[0]} to 1e{n_range[1]} and D from 1e{d_range[0]} to "
                          f"1e{d_range[1]}; losses from E={E}, A={A}, B={B}, alpha={alpha}, beta={beta} with "
                          f"{noise:.1%} noise", _grid_points(200 + seed, *law, n_range, d_range, noise)))
    return cases


@register("check_fit_chinchilla", points=4, minutes=40,
          reference=solution_text(FIT_CHINCHILLA_CODE), misconceptions=CHINCHILLA_MISCONCEPTIONS, forbid=FORBID,
          hint="Write ln L(N, D) as the log of a sum of three exponentials (logsumexp). Its derivative with respect "
               "to each of the three logs is that term's share of the sum.",
          idea="theta = (e, a, b, alpha, beta) with E = e^e, A = e^a, B = e^b; terms (K, 3) = [e, a - alpha·ln N, "
               "b - beta·ln D]; r = logsumexp(terms) - ln L; w = softmax(terms); Jacobian columns w0, w1, w2, "
               "-w1·ln N, -w2·ln D. Levenberg-Marquardt: solve (JᵀJ + λ·diag(JᵀJ)) δ = Jᵀr; if theta - δ lowers "
               "Σr², take it and divide λ by 3, else multiply λ by 3.")
@isolated
def check_fit_chinchilla(learner):
    variants = {"linear_space": lambda n, d, loss: fit_chinchilla_reference(n, d, loss, space="linear"),
                "swapped_n_d": lambda n, d, loss: fit_chinchilla_reference(n, d, loss, swap=True)}
    return _grade_tuples(learner, _chinchilla_cases(), fit_chinchilla_reference, variants,
                         ("E", "A", "B", "alpha", "beta"), "fit_chinchilla(n, d, loss)", rtol=1e-5,
                         arg_names=("n", "d", "loss"))


# ------------------------------------------------------------------ part 6: the compute-optimal model
def _loss(N, D, E, A, B, alpha, beta):
    return E + A / N ** alpha + B / D ** beta


def compute_optimal_reference(C, E, A, B, alpha, beta, *, flops_per_param_token=6.0):
    """Brute force: L(N, C/(6N)) on a grid of 2001 values of ln N from 1 parameter to the whole budget,
    then again on a grid 500 times finer around the best point, six times over."""
    lo, hi = 0.0, math.log(C / flops_per_param_token)
    for _ in range(7):
        log_n = np.linspace(lo, hi, 2001)
        N = np.exp(log_n)
        losses = _loss(N, C / (flops_per_param_token * N), E, A, B, alpha, beta)
        i = int(np.argmin(losses))
        step = log_n[1] - log_n[0]
        lo, hi = log_n[i] - 2 * step, log_n[i] + 2 * step
    N = math.exp(log_n[i])
    D = C / (flops_per_param_token * N)
    return N, D, _loss(N, D, E, A, B, alpha, beta)


def _optimal_variant(C, E, A, B, alpha, beta, *, kind):
    if kind == "no_factor_6":
        return compute_optimal_reference(C, E, A, B, alpha, beta, flops_per_param_token=1.0)
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    a, b = beta / (alpha + beta), alpha / (alpha + beta)
    if kind == "swapped_exponents":
        a, b = b, a
    if kind == "G_inverted":
        G = 1 / G
    N = G * (C / 6) ** a
    D = G * (C / 6) ** b if kind == "D_times_G" else (C / 6) ** b / G
    return N, D, _loss(N, D, E, A, B, alpha, beta)


OPTIMAL_MISCONCEPTIONS = {
    "no_factor_6": "the budget was spent as C = N·D. Training costs about 6 FLOPs per parameter per token "
                   "(2 forward: a multiply and an add; 4 backward): C ≈ 6·N·D, so use C/6.",
    "swapped_exponents": "the exponents are swapped: N_opt = G·(C/6)^(beta/(alpha+beta)) has beta on top and "
                         "D_opt = (C/6)^(alpha/(alpha+beta)) / G has alpha. The resource whose loss term falls "
                         "faster (the larger exponent) gets the smaller share of a growing budget.",
    "G_inverted": "G is upside down: G = (alpha·A / (beta·B))^(1/(alpha+beta)), from setting dL/dN = 0 along "
                  "D = C/(6N).",
    "D_times_G": "D_opt = G^(-1)·(C/6)^(alpha/(alpha+beta)): N_opt·D_opt must equal C/6, so the G of N_opt is "
                 "divided out of D_opt.",
}

CHINCHILLA = (1.69, 406.4, 410.7, 0.34, 0.28)  # Hoffmann et al. 2022, approach 3: E, A, B, alpha, beta


def _optimal_cases() -> list[Case]:
    return [
        Case("Hoffmann et al.'s fit, C = 5.76e23 FLOPs (Gopher's budget)", (5.76e23, *CHINCHILLA)),
        Case("Hoffmann et al.'s fit, C = 1e21 FLOPs", (1e21, *CHINCHILLA)),
        Case("E=1.82, A=482, B=2085, alpha=0.35, beta=0.37, C = 1e24 FLOPs", (1e24, 1.82, 482.0, 2085.0, 0.35, 0.37)),
        Case("a tiny budget, C = 6e12 FLOPs, E=1.0, A=50, B=20, alpha=0.25, beta=0.4",
             (6e12, 1.0, 50.0, 20.0, 0.25, 0.4)),
    ]


@register("check_compute_optimal", points=3, minutes=20, reference=solution_text(COMPUTE_OPTIMAL_CODE),
          misconceptions=OPTIMAL_MISCONCEPTIONS, forbid=FORBID,
          hint="With the budget fixed, D is no longer free: D = C / (6N). Put that into L(N, D) and ask where "
               "its derivative in N is zero.",
          idea="G = (alpha·A / (beta·B))^(1/(alpha+beta)); N_opt = G·(C/6)^(beta/(alpha+beta)); "
               "D_opt = (C/6)^(alpha/(alpha+beta)) / G; the loss there is E + A/N_opt^alpha + B/D_opt^beta.")
@isolated
def check_compute_optimal(learner):
    variants = {k: (lambda *a, k=k: _optimal_variant(*a, kind=k)) for k in OPTIMAL_MISCONCEPTIONS}
    return _grade_tuples(learner, _optimal_cases(), compute_optimal_reference, variants, ("N", "D", "loss"),
                         "compute_optimal(C, E, A, B, alpha, beta)", rtol=1e-5)  # the grid finds N to ~1e-7
