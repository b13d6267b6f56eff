"""DiT's AdaLN-zero on diffusers' own block: exact identity at init, analytic modulation gradients, hidden branches."""

import pytest
import torch
from PIL import Image

from experiments.adaln_zero import (
    CHUNKS,
    GATES,
    adaln_zero_analysis,
    analytic_modulation_grad,
    analytic_parts,
    conditioning,
    dit_block,
    loss_fn,
    relative_error,
    toy_batch,
    zero_modulation,
)
from models.profiles import load_profile
from tasks.adaln_zero import ADALN_ZERO


@pytest.fixture(scope="module")
def report():
    return adaln_zero_analysis(seed=0)


@pytest.fixture(scope="module")
def first_step():
    """A zero-modulation block after one backward pass, the analytic expression's inputs, and c before its SiLU."""
    gen = torch.Generator().manual_seed(3)
    block = zero_modulation(dit_block(2, 8, 5, gen))
    batch = toy_batch(16, 6, 3, 5, gen)
    parts = analytic_parts(block, batch)
    with torch.no_grad():
        raw_condition = conditioning(block, batch).double()
    loss_fn(block(batch.x, timestep=batch.timestep, class_labels=batch.class_labels), batch.target).backward()
    return block, parts, raw_condition


def test_chunk_order_is_diffusers_own():
    """Only gate_msa = 1: the block adds exactly its attention branch; only gate_mlp = 1: exactly its MLP branch."""
    gen = torch.Generator().manual_seed(1)
    block = zero_modulation(dit_block(2, 8, 5, gen))
    batch = toy_batch(16, 6, 2, 5, gen)
    dim = 16
    for gate, branch in (("gate_msa", lambda x: block.attn1(block.norm1.norm(x))),
                         ("gate_mlp", lambda x: block.ff(block.norm3(x)))):
        with torch.no_grad():
            block.norm1.linear.bias.zero_()
            block.norm1.linear.bias[CHUNKS.index(gate) * dim:(CHUNKS.index(gate) + 1) * dim] = 1.0
            out = block(batch.x, timestep=batch.timestep, class_labels=batch.class_labels)
            torch.testing.assert_close(out, batch.x + branch(batch.x), rtol=1e-6, atol=1e-6)
            assert (out - batch.x).abs().max() > 0.1


def test_adaln_zero_block_is_the_identity_bit_for_bit(report):
    zero = report.zero
    assert zero.identity and zero.max_abs_change == 0.0 and zero.relative_change == 0.0
    assert zero.max_abs_gate == 0.0
    assert zero.input_grad_vs_output_grad == 0.0  # the identity hands ∂L/∂out on unchanged


def test_default_init_disturbs_its_input(report):
    default = report.default
    assert not default.identity
    assert default.relative_change > 0.05  # measured 0.096 at the defaults (D = 64, 16 tokens, seed 0)
    assert default.max_abs_change > 0.1 and default.max_abs_gate > 0.1
    assert default.input_grad_vs_output_grad > 0.0


def test_modulation_gradient_is_the_analytic_one_and_only_in_the_gate_rows(report):
    assert report.modulation_weight_grad_rel_error <= 1e-5
    assert report.modulation_bias_grad_rel_error <= 1e-5
    norms = report.zero.modulation_grad_norms
    assert all(norms[g] > 1e-5 for g in GATES)
    assert all(norms[c] == 0.0 for c in CHUNKS if c not in GATES)
    assert all(v > 0.0 for v in report.default.modulation_grad_norms.values())


def test_the_comparison_fails_for_a_wrong_expression(first_step):
    """The 1e-5 agreement means something: each plausible slip in the expression is far off."""
    block, parts, raw_condition = first_step
    measured = block.norm1.linear.weight.grad
    assert relative_error(measured, analytic_modulation_grad(**parts)[0]) <= 1e-5
    wrong = {
        "gates swapped (msa ↔ mlp)": {**parts, "attn_branch": parts["mlp_branch"], "mlp_branch": parts["attn_branch"]},
        "SiLU forgotten": {**parts, "silu_condition": raw_condition},
        "sign of G flipped": {**parts, "upstream": -parts["upstream"]},
    }
    errors = {name: relative_error(measured, analytic_modulation_grad(**p)[0]) for name, p in wrong.items()}
    assert all(e > 0.1 for e in errors.values()), errors


def test_branches_and_embedder_learn_only_once_the_gates_move(report):
    zero, default = report.zero, report.default
    assert zero.branch_grad_max_abs == 0.0 and zero.embedder_grad_max_abs == 0.0
    assert default.branch_grad_max_abs > 0.0 and default.embedder_grad_max_abs > 0.0
    assert zero.branch_grad_norm_after_one_step > 0.0 and zero.branch_grad_norm[1] > 0.0
    assert zero.gate_msa_rms[0] == 0.0 and zero.gate_msa_rms[1] > 0.0 and zero.gate_mlp_rms[1] > 0.0
    assert zero.relative_change_per_step[0] == 0.0 and zero.relative_change_per_step[-1] > 0.0
    assert len(zero.loss) == report.steps + 1 == len(default.loss)
    assert zero.loss[0] < default.loss[0]  # identity starts nearer a target x + 0.1·ε than a disturbing block


def test_endpoint_outputs_through_the_task():
    toy = load_profile("toy")
    result = ADALN_ZERO(toy, seed=0, heads=2, head_dim=8, tokens=4, sgd_steps=2)
    plot, table, measured = result.values(ADALN_ZERO.spec)
    assert isinstance(plot, Image.Image) and plot.width > 1000
    assert "bit identical: True" in table and "bit identical: False" in table
    assert measured["zero"]["identity"] and measured["modulation_weight_grad_rel_error"] <= 1e-5
    assert "api_name='/adaln_zero'" in measured["reproduce"] and "sgd_steps=2" in measured["reproduce"]
    again = adaln_zero_analysis(seed=0, heads=2, head_dim=8, tokens=4, steps=2, lr=5.0)
    assert again.zero.loss == measured["zero"]["loss"] and again.default.loss == measured["default"]["loss"]


@pytest.mark.parametrize(("request_", "message"), [
    (dict(heads=0), "heads must be between 1 and 8"),
    (dict(head_dim=64), "head_dim must be between 4 and 32"),
    (dict(tokens=1000), "tokens must be between 1 and 64"),
    (dict(sgd_steps=0), "sgd_steps must be between 1 and 50"),
    (dict(lr=-1), "lr must be between"),
    (dict(lr="nan"), "lr must be"),
    (dict(heads=1, head_dim=4, tokens=1, sgd_steps=50, lr=20.0), "diverged at SGD step"),
])
def test_bad_requests_get_clear_messages(request_, message):
    with pytest.raises(ValueError, match=message):
        ADALN_ZERO(load_profile("toy"), **request_)
