import numpy as np
import pytest

from cltrain.metrics import backward_transfer, forgetting, forward_transfer, seen_average, summary

R = np.array([
    [0.9, 0.2, 0.1],
    [0.7, 0.8, 0.3],
    [0.6, 0.5, 0.9],
])
B = np.array([0.1, 0.1, 0.2])


def test_formulas_on_a_hand_computed_matrix():
    s = summary(R, B)
    assert s["acc"] == pytest.approx((0.6 + 0.5 + 0.9) / 3)
    assert s["bwt"] == pytest.approx(((0.6 - 0.9) + (0.5 - 0.8)) / 2)  # -0.3
    assert s["fwt"] == pytest.approx(((0.2 - 0.1) + (0.3 - 0.2)) / 2)  # R[0][1]-b1, R[1][2]-b2
    # forgetting: task 0 best 0.9 -> 0.6; task 1 best over phases 0..1 is 0.8 -> 0.5
    assert s["forgetting"] == pytest.approx((0.3 + 0.3) / 2)


def test_forgetting_uses_the_best_earlier_accuracy_not_the_first():
    R2 = np.array([[0.5, 0.0, 0.0], [0.9, 0.4, 0.0], [0.7, 0.9, 0.8]])
    assert forgetting(R2) == pytest.approx(((0.9 - 0.7) + (0.4 - 0.9)) / 2)
    assert backward_transfer(R2) == pytest.approx(((0.7 - 0.5) + (0.9 - 0.4)) / 2)


def test_recurring_order_uses_first_training_phase():
    # phases train tasks 0, 1, 0, 2: task 2 first appears in phase 3
    order = [0, 1, 0, 2]
    Rr = np.array([[0.9, 0.1, 0.1], [0.5, 0.9, 0.2], [0.95, 0.6, 0.2], [0.8, 0.5, 0.9]])
    b = np.array([0.1, 0.1, 0.1])
    assert forward_transfer(Rr, b, order) == pytest.approx(((0.1 - 0.1) + (0.2 - 0.1)) / 2)
    assert backward_transfer(Rr, order) == pytest.approx(((0.8 - 0.9) + (0.5 - 0.9)) / 2)
    assert seen_average(Rr, order) == pytest.approx([0.9, 0.7, 0.775, (0.8 + 0.5 + 0.9) / 3])


def test_forgetting_ignores_phases_before_the_task_was_learned():
    """DESIGN.md: the best accuracy from the phase the task was learned on (Chaudhry et al.), not the max over
    every earlier phase: here task 1 scores 0.95 by forward transfer before it is ever trained."""
    R3 = np.array([[0.9, 0.95, 0.1], [0.8, 0.6, 0.2], [0.7, 0.5, 0.9]])
    standard = ((0.9 - 0.7) + (0.6 - 0.5)) / 2
    max_over_all_earlier = ((0.9 - 0.7) + (0.95 - 0.5)) / 2
    assert standard != pytest.approx(max_over_all_earlier)
    assert forgetting(R3) == pytest.approx(standard)
    # recurring order 1, 0, 1, 2: task 0 is learned in phase 1, so phase 0's 0.99 does not count
    order = [1, 0, 1, 2]
    Rr = np.array([[0.99, 0.9, 0.1], [0.7, 0.5, 0.1], [0.6, 0.95, 0.1], [0.4, 0.8, 0.9]])
    assert forgetting(Rr, order) == pytest.approx(((0.7 - 0.4) + (0.95 - 0.8)) / 2)
