"""DPO, conservative DPO and IPO against values computed by hand (ALGORITHMS.md, DPO).

Inputs: policy chosen/rejected [-1, -2] / [-3, -1], reference [-1.5, -2] / [-2.5, -1.5], so
chosen rewards [0.5, 0], rejected rewards [-0.5, 0.5] and h = [1, -0.5]. With beta = 0.5:
  sigmoid:       log(1 + e^-0.5) + log(1 + e^0.25)                = 0.474077 + 0.825939
  conservative:  0.8 * above + 0.2 * (log(1 + e^0.5) + log(1 + e^-0.25))
                 = (0.8*0.474077 + 0.2*0.974077) + (0.8*0.825939 + 0.2*0.575939)
  ipo:           (1 - 1/(2*0.5))^2 + (-0.5 - 1)^2                = 0 + 2.25
"""

import pytest
import torch

from raylign.algorithms.core import masked_sum
from raylign.algorithms.dpo import DPOConfig, dpo_loss

POLICY_CHOSEN = torch.tensor([-1.0, -2.0])
POLICY_REJECTED = torch.tensor([-3.0, -1.0])
REF_CHOSEN = torch.tensor([-1.5, -2.0])
REF_REJECTED = torch.tensor([-2.5, -1.5])


def _loss(**kwargs):
    return dpo_loss(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.5, **kwargs)


def test_sigmoid_dpo_matches_hand_values():
    loss_sum, count, metrics = _loss(loss_type="sigmoid")
    assert count == 2
    assert float(loss_sum) == pytest.approx(0.474077 + 0.825939, abs=1e-5)
    assert metrics["dpo_loss"] == pytest.approx((0.474077 + 0.825939) / 2, abs=1e-5)
    assert metrics["reward_accuracy"] == pytest.approx(0.5)  # only the first pair has h > 0
    assert metrics["reward_margin"] == pytest.approx((0.5 * 1.0 + 0.5 * -0.5) / 2)
    assert metrics["chosen_reward"] == pytest.approx(0.5 * (0.5 + 0.0) / 2)
    assert metrics["rejected_reward"] == pytest.approx(0.5 * (-0.5 + 0.5) / 2)


def test_conservative_dpo_matches_hand_values():
    loss_sum, _, _ = _loss(loss_type="conservative", label_smoothing=0.2)
    want = (0.8 * 0.474077 + 0.2 * 0.974077) + (0.8 * 0.825939 + 0.2 * 0.575939)
    assert float(loss_sum) == pytest.approx(want, abs=1e-5)
    # with no smoothing it is plain DPO
    plain, _, _ = _loss(loss_type="conservative", label_smoothing=0.0)
    assert float(plain) == pytest.approx(0.474077 + 0.825939, abs=1e-5)


def test_ipo_matches_hand_values():
    loss_sum, _, _ = _loss(loss_type="ipo")
    assert float(loss_sum) == pytest.approx(0.0 + 2.25, abs=1e-6)


def test_gradient_pushes_chosen_up_and_rejected_down():
    chosen = POLICY_CHOSEN.clone().requires_grad_(True)
    rejected = POLICY_REJECTED.clone().requires_grad_(True)
    loss_sum, _, _ = dpo_loss(chosen, rejected, REF_CHOSEN, REF_REJECTED, beta=0.5)
    loss_sum.backward()
    # d/dchosen of -log sigma(beta h) = -beta * sigma(-beta h): negative, so descent raises chosen
    assert float(chosen.grad[0]) == pytest.approx(-0.5 * torch.sigmoid(torch.tensor(-0.5)).item(), abs=1e-6)
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()


def test_policy_equal_to_reference_gives_log2_and_half_accuracy():
    x = torch.tensor([-4.0, -7.0, -1.0])
    loss_sum, count, metrics = dpo_loss(x, x - 1, x, x - 1, beta=0.1)
    assert float(loss_sum) / count == pytest.approx(0.693147, abs=1e-6)  # -log sigma(0)
    assert metrics["reward_accuracy"] == pytest.approx(0.5)  # ties count half


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.0)
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(POLICY_CHOSEN, POLICY_REJECTED[:1], REF_CHOSEN, REF_REJECTED)
    with pytest.raises(ValueError, match="label_smoothing"):
        _loss(loss_type="conservative", label_smoothing=0.5)
    with pytest.raises(ValueError, match="loss_type"):
        _loss(loss_type="hinge")
    assert DPOConfig().beta == 0.1


def test_sequence_logprobs_sums_response_tokens_only():
    lp = torch.tensor([[0.0, -1.0, -2.0, -3.0], [0.0, -0.5, -0.25, 0.0]])
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]])
    assert masked_sum(lp, mask, dim=-1).tolist() == pytest.approx([-5.0, -0.75])
