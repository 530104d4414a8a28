"""Exercise 13's scaling-law checks, both ways: check_fit_power_law, check_fit_scaling_law,
check_fit_chinchilla and check_compute_optimal accept the printed solutions and other correct
implementations (torch.linalg.lstsq, numpy, base-10 logarithms used consistently, autograd Jacobians,
Levenberg-Marquardt on the plain constants, D's closed form first), and reject the stub and each
named misconception, written here as a learner would write it, with that diagnosis in the message.
The checks' own references are independent (numpy.polyfit, scipy's least squares, a brute-force
search); the tests below also hold them against each other and against the closed forms."""
import math

import numpy as np
import pytest
import torch

from course_lib.checks import (check_compute_optimal, check_fit_chinchilla, check_fit_power_law,
                               check_fit_scaling_law)
from course_lib.checks.experiments_track13 import (_chinchilla_cases, _optimal_cases, _power_law_cases,
                                                    _scaling_law_cases, compute_optimal_reference,
                                                    fit_chinchilla_reference, fit_power_law_reference,
                                                    fit_scaling_law_reference)

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")

POWER = solved("check_fit_power_law")
SCALING = solved("check_fit_scaling_law")
CHINCHILLA = solved("check_fit_chinchilla")
OPTIMAL = solved("check_compute_optimal")


# ------------------------------------------------------------------ the references, against each other
def test_polyfit_reference_recovers_an_exact_power_law():
    n = torch.logspace(3, 9, 7, dtype=torch.float64)
    A, alpha = fit_power_law_reference(n, 1.5 + 20.0 * n ** -0.3, 1.5)
    assert A == pytest.approx(20.0, rel=1e-10) and alpha == pytest.approx(0.3, rel=1e-10)


@pytest.mark.parametrize("case", _scaling_law_cases(), ids=lambda c: c.label[:30])
def test_scaling_law_reference_is_a_minimum(case):
    """scipy's answer has zero gradient of the log-space sum of squares, checked with torch autograd."""
    n, loss = case.args
    E, A, alpha = fit_scaling_law_reference(n, loss)
    theta = torch.tensor([E, math.log(A), alpha], dtype=torch.float64, requires_grad=True)
    r = torch.log(theta[0] + torch.exp(theta[1] - theta[2] * torch.log(n))) - torch.log(loss)
    (r ** 2).sum().backward()
    assert theta.grad.abs().max() < 1e-8


def test_brute_force_optimum_matches_the_closed_form():
    for case in _optimal_cases():
        C, E, A, B, alpha, beta = case.args
        G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
        N = G * (C / 6) ** (beta / (alpha + beta))
        assert compute_optimal_reference(*case.args)[0] == pytest.approx(N, rel=1e-6)


def test_chinchilla_reference_recovers_exact_points():
    exact = _chinchilla_cases()[-1]  # noise 0
    got = fit_chinchilla_reference(*exact.args)
    assert got == pytest.approx((2.0, 10.0, 30.0, 0.2, 0.15), rel=1e-6)


# ------------------------------------------------------------------ correct implementations
def power_lstsq(n, loss, E=0.0):
    X = torch.stack([torch.ones_like(n), torch.log(n)], dim=1)  # (K, 2)
    coef = torch.linalg.lstsq(X, torch.log(loss - E).unsqueeze(1)).solution.squeeze(1)  # (2,)
    return math.exp(coef[0]), -coef[1].item()


def power_log10(n, loss, E=0.0):
    x, y = np.log10(n.numpy()), np.log10(loss.numpy() - E)
    slope = np.cov(x, y, bias=True)[0, 1] / np.var(x)
    return 10 ** (y.mean() - slope * x.mean()), -slope  # base 10 throughout: A = 10^intercept


def power_float_lists(n, loss, E=0.0):
    xs = [math.log(v) for v in n.tolist()]
    ys = [math.log(v - E) for v in loss.tolist()]
    k = len(xs)
    sx, sy = sum(xs), sum(ys)
    slope = (k * sum(x * y for x, y in zip(xs, ys)) - sx * sy) / (k * sum(x * x for x in xs) - sx ** 2)
    return math.exp((sy - slope * sx) / k), -slope


@pytest.mark.parametrize("impl", [POWER, power_lstsq, power_log10, power_float_lists])
def test_power_law_accepts_correct_implementations(impl):
    r = check_fit_power_law(impl)
    assert r.passed and r.points == r.max_points == 2, r.message


def scaling_numpy(n, loss, steps=30):
    """Gauss-Newton in numpy, each step by np.linalg.lstsq, returning numpy floats."""
    log_n, log_loss = np.log(n.numpy()), np.log(loss.numpy())
    E = loss.numpy().min() / 2
    A, alpha = POWER(n, loss, float(E))
    theta = np.array([E, np.log(A), alpha])
    for _ in range(steps):
        p = np.exp(theta[1] - theta[2] * log_n)
        M = theta[0] + p
        J = np.stack([1 / M, p / M, -p * log_n / M], axis=1)
        theta = theta - np.linalg.lstsq(J, np.log(M) - log_loss, rcond=None)[0]
    return theta[0], np.exp(theta[1]), theta[2]


def scaling_autograd(n, loss, steps=25):
    """Newton-free: Gauss-Newton with the Jacobian from torch.autograd.functional.jacobian."""
    E = float(loss.min()) / 2
    A, alpha = POWER(n, loss, E)
    log_n, log_loss = torch.log(n), torch.log(loss)
    theta = torch.tensor([E, math.log(A), alpha], dtype=torch.float64)

    def res(t):
        return torch.log(t[0] + torch.exp(t[1] - t[2] * log_n)) - log_loss

    for _ in range(steps):
        J = torch.autograd.functional.jacobian(res, theta)
        theta = theta - torch.linalg.pinv(J) @ res(theta)
    return theta[0].item(), math.exp(theta[1].item()), theta[2].item()


@pytest.mark.parametrize("impl", [SCALING, scaling_numpy, scaling_autograd])
def test_scaling_law_accepts_correct_implementations(impl):
    r = check_fit_scaling_law(impl)
    assert r.passed and r.points == r.max_points == 4, r.message


def chinchilla_plain_exponents(n, d, loss, steps=200):
    """Levenberg-Marquardt on (E, A, B, alpha, beta) directly, with an identity damping term and autograd."""
    log_n, log_d, log_loss = torch.log(n), torch.log(d), torch.log(loss)

    def res(t):
        E, A, B, a, b = t
        return torch.log(E + A * torch.exp(-a * log_n) + B * torch.exp(-b * log_d)) - log_loss

    theta = torch.tensor([float(loss.min()) / 2, 150.0, 150.0, 0.3, 0.3], dtype=torch.float64)
    scale = theta.abs().clone()  # work on theta / scale, so that A and alpha have similar sizes
    u, lam = torch.ones(5, dtype=torch.float64), 1.0
    cost = (res(u * scale) ** 2).sum()
    for _ in range(steps):
        J = torch.autograd.functional.jacobian(lambda v: res(v * scale), u)
        step = torch.linalg.solve(J.T @ J + lam * torch.eye(5, dtype=torch.float64), J.T @ res(u * scale))
        new_cost = (res((u - step) * scale) ** 2).sum()
        if torch.isfinite(new_cost) and new_cost < cost:
            u, cost, lam = u - step, new_cost, lam / 4
        else:
            lam *= 4
    return tuple((u * scale).tolist())


@pytest.mark.parametrize("impl", [CHINCHILLA, chinchilla_plain_exponents])
def test_chinchilla_accepts_correct_implementations(impl):
    r = check_fit_chinchilla(impl)
    assert r.passed and r.points == r.max_points == 4, r.message


def optimal_from_d(C, E, A, B, alpha, beta):
    """D first, from its own closed form; N from the budget."""
    D = (beta * B / (alpha * A)) ** (1 / (alpha + beta)) * (C / 6) ** (alpha / (alpha + beta))
    N = C / (6 * D)
    return N, D, E + A * N ** -alpha + B * D ** -beta


def optimal_log_space(C, E, A, B, alpha, beta):
    log_n = (math.log(alpha * A / (beta * B)) + beta * math.log(C / 6)) / (alpha + beta)
    N = math.exp(log_n)
    D = math.exp(math.log(C / 6) - log_n)
    return torch.tensor(N), torch.tensor(D), torch.tensor(E + A / N ** alpha + B / D ** beta)  # 0-d tensors


@pytest.mark.parametrize("impl", [OPTIMAL, optimal_from_d, optimal_log_space])
def test_compute_optimal_accepts_correct_implementations(impl):
    r = check_compute_optimal(impl)
    assert r.passed and r.points == r.max_points == 3, r.message


# ------------------------------------------------------------------ stubs, delegation, bad output
def test_stubs_are_not_attempted():
    def stub(*args):
        raise NotImplementedError()
    for check in (check_fit_power_law, check_fit_scaling_law, check_fit_chinchilla, check_compute_optimal):
        assert_not_attempted(check(stub))


def power_polyfit(n, loss, E=0.0):
    slope, intercept = np.polyfit(np.log(n.numpy()), np.log(loss.numpy() - E), 1)
    return math.exp(intercept), -slope


fit_line = np.polyfit  # an alias made before the check runs


def power_polyfit_alias(n, loss, E=0.0):
    slope, intercept = fit_line(np.log(n.numpy()), np.log(loss.numpy() - E), deg=1)
    return math.exp(intercept), -slope


def power_course(n, loss, E=0.0):
    from course_lib.experiments import fit_power_law
    law = fit_power_law(n.numpy(), loss.numpy() - E)
    return law.coefficient, law.exponent


def scaling_scipy(n, loss, steps=20):
    from scipy.optimize import curve_fit
    (E, A, alpha), _ = curve_fit(lambda x, E, A, a: np.log(E + A * x ** -a), n.numpy(), np.log(loss.numpy()),
                                 p0=[float(loss.min()) / 2, 100.0, 0.3], maxfev=20000)
    return E, A, alpha


def optimal_course(C, E, A, B, alpha, beta):
    from course_lib.experiments import compute_optimal
    N, D = compute_optimal(C)
    return N, D, E + A / N ** alpha + B / D ** beta


@pytest.mark.parametrize("check,impl,used", [
    (check_fit_power_law, power_polyfit, "numpy.polyfit"),
    (check_fit_power_law, power_polyfit_alias, "numpy.polyfit"),
    (check_fit_power_law, power_course, "course_lib.experiments.fit_power_law"),
    (check_fit_power_law, fit_power_law_reference, "course_lib.checks"),
    (check_fit_scaling_law, scaling_scipy, "scipy.optimize"),
    (check_fit_chinchilla, lambda n, d, loss: fit_chinchilla_reference(n, d, loss), "course_lib.checks"),
    (check_compute_optimal, optimal_course, "course_lib.experiments.compute_optimal"),
])
def test_refuses_delegation(check, impl, used):
    assert_delegates(check(impl), used)


def test_bad_outputs_are_explained():
    r = check_fit_power_law(lambda n, loss, E=0.0: torch.stack([torch.tensor(1.0), torch.tensor(2.0)]))
    assert not r.passed and "tuple of 2 numbers" in r.message
    r = check_fit_scaling_law(lambda n, loss, steps=20: (float("nan"), 1.0, 0.3))
    assert not r.passed and "finite" in r.message
    r = check_compute_optimal(lambda *a: None)
    assert not r.passed and "return" in r.message
    r = check_fit_chinchilla(lambda n, d, loss, steps=100: 1 / 0)
    assert not r.passed and "ZeroDivisionError" in r.message


# ------------------------------------------------------------------ misconceptions, as a learner writes them
def _line(x, y):
    dx, dy = x - x.mean(), y - y.mean()
    slope = (dx * dy).sum() / (dx * dx).sum()
    return slope.item(), (y.mean() - slope * x.mean()).item()


def power_floor_ignored(n, loss, E=0.0):
    slope, intercept = _line(torch.log(n), torch.log(loss))  # forgot "- E"
    return math.exp(intercept), -slope


def power_log10_intercept(n, loss, E=0.0):
    slope, intercept = _line(torch.log10(n), torch.log10(loss - E))
    return math.exp(intercept), -slope  # base-10 intercept, natural exp


def power_alpha_sign(n, loss, E=0.0):
    slope, intercept = _line(torch.log(n), torch.log(loss - E))
    return math.exp(intercept), slope


def power_intercept_not_exponentiated(n, loss, E=0.0):
    slope, intercept = _line(torch.log(n), torch.log(loss - E))
    return intercept, -slope


def power_swapped_axes(n, loss, E=0.0):
    x, y = torch.log(n), torch.log(loss - E)
    m, c = _line(y, x)  # ln N = m·ln(L - E) + c
    return math.exp(-c / m), -1 / m


def power_mutates(n, loss, E=0.0):
    loss -= E  # in place
    return POWER(n, loss, 0.0)


POWER_BAD = {"floor_ignored": power_floor_ignored, "log10_intercept": power_log10_intercept,
             "alpha_sign": power_alpha_sign, "intercept_not_exponentiated": power_intercept_not_exponentiated,
             "swapped_axes": power_swapped_axes, "mutates_input": power_mutates}


@pytest.mark.parametrize("key", list(POWER_BAD))
def test_power_law_diagnoses_each_misconception(key):
    assert_diagnosed(check_fit_power_law(POWER_BAD[key]), key)


def test_power_law_misconceptions_are_all_tested():
    assert_all_tested("check_fit_power_law", POWER_BAD)


def scaling_linear_space(n, loss, steps=60):
    E = float(loss.min()) / 2
    A, alpha = POWER(n, loss, E)
    theta = torch.tensor([E, math.log(A), alpha], dtype=torch.float64)
    log_n = torch.log(n)
    for _ in range(steps):
        p = torch.exp(theta[1] - theta[2] * log_n)
        r = theta[0] + p - loss  # residuals of L itself
        J = torch.stack([torch.ones_like(p), p, -p * log_n], dim=1)
        theta = theta - torch.linalg.solve(J.T @ J, J.T @ r)
    return theta[0].item(), math.exp(theta[1].item()), theta[2].item()


def scaling_floor_not_fitted(n, loss, steps=40):
    E = float(loss.min()) / 2
    A, alpha = POWER(n, loss, E)
    theta = torch.tensor([math.log(A), alpha], dtype=torch.float64)
    log_n = torch.log(n)
    for _ in range(steps):
        p = torch.exp(theta[0] - theta[1] * log_n)
        M = E + p
        J = torch.stack([p / M, -p * log_n / M], dim=1)  # no column for E
        theta = theta - torch.linalg.solve(J.T @ J, J.T @ (torch.log(M) - torch.log(loss)))
    return E, math.exp(theta[0].item()), theta[1].item()


def scaling_mutates(n, loss, steps=20):
    n.log_()
    return SCALING(n.exp(), loss, steps)


SCALING_BAD = {"linear_space": scaling_linear_space, "floor_not_fitted": scaling_floor_not_fitted,
               "mutates_input": scaling_mutates}


@pytest.mark.parametrize("key", list(SCALING_BAD))
def test_scaling_law_diagnoses_each_misconception(key):
    assert_diagnosed(check_fit_scaling_law(SCALING_BAD[key]), key)


def test_scaling_law_misconceptions_are_all_tested():
    assert_all_tested("check_fit_scaling_law", SCALING_BAD)


def chinchilla_linear_space(n, d, loss, steps=300):
    log_n, log_d = torch.log(n), torch.log(d)
    theta = torch.tensor([math.log(float(loss.min()) / 2), 5.0, 5.0, 0.3, 0.3], dtype=torch.float64)

    def res(t):
        return torch.exp(t[0]) + torch.exp(t[1] - t[3] * log_n) + torch.exp(t[2] - t[4] * log_d) - loss

    lam, cost = 1e-3, (res(theta) ** 2).sum()
    for _ in range(steps):
        J = torch.autograd.functional.jacobian(res, theta)
        JtJ = J.T @ J
        new = theta - torch.linalg.solve(JtJ + lam * torch.diag(JtJ.diagonal()), J.T @ res(theta))
        new_cost = (res(new) ** 2).sum()
        if torch.isfinite(new_cost) and new_cost < cost:
            theta, cost, lam = new, new_cost, lam / 3
        else:
            lam *= 3
    e, a, b, alpha, beta = theta.tolist()
    return math.exp(e), math.exp(a), math.exp(b), alpha, beta


def chinchilla_swapped(n, d, loss, steps=100):
    return CHINCHILLA(d, n, loss, steps)  # the model-size term fitted to D, the data term to N


def chinchilla_mutates(n, d, loss, steps=100):
    out = CHINCHILLA(n, d, loss, steps)
    d.mul_(1.0).add_(1.0)
    return out


CHINCHILLA_BAD = {"linear_space": chinchilla_linear_space, "swapped_n_d": chinchilla_swapped,
                  "mutates_input": chinchilla_mutates}


@pytest.mark.parametrize("key", list(CHINCHILLA_BAD))
def test_chinchilla_diagnoses_each_misconception(key):
    assert_diagnosed(check_fit_chinchilla(CHINCHILLA_BAD[key]), key)


def test_chinchilla_misconceptions_are_all_tested():
    assert_all_tested("check_fit_chinchilla", CHINCHILLA_BAD)


def optimal_no_factor_6(C, E, A, B, alpha, beta):
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    N = G * C ** (beta / (alpha + beta))  # C = N·D
    D = C / N
    return N, D, E + A / N ** alpha + B / D ** beta


def optimal_swapped(C, E, A, B, alpha, beta):
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    N = G * (C / 6) ** (alpha / (alpha + beta))
    D = (C / 6) ** (beta / (alpha + beta)) / G
    return N, D, E + A / N ** alpha + B / D ** beta


def optimal_G_inverted(C, E, A, B, alpha, beta):
    G = (beta * B / (alpha * A)) ** (1 / (alpha + beta))
    N = G * (C / 6) ** (beta / (alpha + beta))
    D = (C / 6) ** (alpha / (alpha + beta)) / G
    return N, D, E + A / N ** alpha + B / D ** beta


def optimal_D_times_G(C, E, A, B, alpha, beta):
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    N = G * (C / 6) ** (beta / (alpha + beta))
    D = G * (C / 6) ** (alpha / (alpha + beta))
    return N, D, E + A / N ** alpha + B / D ** beta


OPTIMAL_BAD = {"no_factor_6": optimal_no_factor_6, "swapped_exponents": optimal_swapped,
               "G_inverted": optimal_G_inverted, "D_times_G": optimal_D_times_G}


@pytest.mark.parametrize("key", list(OPTIMAL_BAD))
def test_compute_optimal_diagnoses_each_misconception(key):
    assert_diagnosed(check_compute_optimal(OPTIMAL_BAD[key]), key)


def test_compute_optimal_misconceptions_are_all_tested():
    assert_all_tested("check_compute_optimal", OPTIMAL_BAD)


def test_power_law_cases_cover_a_zero_floor():
    assert any(c.args[2] == 0.0 for c in _power_law_cases()) and any(c.args[2] > 0 for c in _power_law_cases())
