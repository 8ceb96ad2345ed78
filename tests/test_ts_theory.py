"Fast checks of localrules.theory.ts_theory and localrules.theory.analysis beyond the notebooks' inline tests."
import math, numpy as np, pytest
from scipy.integrate import quad
from localrules.theory.ts_theory import (
    I2, I3, I4, g, gprime, init_weights, order_params, integrate, simulate, rhs, eg,
    escape_time)
from localrules.theory.analysis import alignment_angle, layer_angles, slowness

def test_i2_single_variable_matches_quadrature():
    for c in (0.3, 1.0, 2.5):
        num = quad(lambda z: g(math.sqrt(c) * z) ** 2 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -12, 12)[0]
        assert abs(I2(np.array([[c]]))[0, 0] - num) < 1e-8

def test_i3_i4_independent_variables():
    C = np.diag([0.5, 1.0, 2.0, 0.7])
    assert np.allclose(I3(C, [0], [1], [2]), 0)                  # independent: E[g'] E[z] E[g] = 0
    Eg2 = I2(C)[2, 2]
    assert abs(I4(C, [0], [0], [2], [2])[0, 0, 0,
                                         0] - quad(
                                             lambda z: gprime(
                                                 math.sqrt(
                                                     .5) * z) ** 2 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -12,
                                                   12)[0] * Eg2) < 1e-8

def test_bad_inputs_name_the_parameter():
    with pytest.raises(ValueError, match='w2_teacher'): init_weights(50, M=2, w2_teacher=[1., 2., 3.])
    with pytest.raises(ValueError, match='f_align'): init_weights(50, f_align=2.)
    w = init_weights(50)
    with pytest.raises(ValueError, match='t_eval'): simulate(w, 0.05, [2., 1.])
    with pytest.raises(ValueError, match='rule'): simulate(w, 0.05, [0., 1.], rule='sgd')

def test_rhs_zero_at_teacher():
    "A student equal to the teacher (K = M, W1 = W̃1, W2 = W̃2) is a fixed point of the ODEs (e = 0)."
    w = init_weights(100, seed=3)
    w = dict(w, W1=w['W1t'].copy(), W2=w['W2t'].copy())
    s = order_params(w)
    assert eg(s) < 1e-12
    assert all(np.abs(v).max() < 1e-12 for v in rhs(s, 0.05).values())

def test_seeded_simulation_is_reproducible():
    w = init_weights(60, f_align=0.5, seed=2)
    a, b = simulate(w, 0.05, [0., 2.], seeds=[5]), simulate(w, 0.05, [0., 2.], seeds=[5])
    assert np.array_equal(a['Q'], b['Q']) and not np.array_equal(a['Q'], simulate(w, 0.05, [0., 2.], seeds=[6])['Q'])

def test_analysis_helpers():
    W = np.random.default_rng(0).normal(size=(5, 7))
    assert alignment_angle(W.T, [W]) < 1e-6 and abs(alignment_angle(-W.T, [W]) - 180) < 1e-6
    assert layer_angles([W.T], [W])[0] < 1e-6
    t = np.arange(1, 61)
    s = slowness(90 * t / (0.1 + t), 10.)
    assert abs(s['a'] - 0.1) < 0.02 and s['r2'] > 0.9
    assert escape_time([0, 1], [1., 0.]) == 0.5
