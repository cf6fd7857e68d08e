"""The stacker that sets the members' gains before the fusion net trains."""

from __future__ import annotations

import torch
from torch import nn

from prodclass.models.multimodal import FLAGS, fit_stack_gains


def test_gains_trust_the_reliable_member_more_than_the_overconfident_one():
    torch.manual_seed(0)
    n, classes = 600, 5
    targets = torch.randint(0, classes, (n,))
    # member 0: soft but right 80% of the time; member 1: very sure, right 40% of the time
    right0 = torch.rand(n) < 0.8
    right1 = torch.rand(n) < 0.4
    guess0 = torch.where(right0, targets, torch.randint(0, classes, (n,)))
    guess1 = torch.where(right1, targets, torch.randint(0, classes, (n,)))
    logp0 = torch.log_softmax(2.0 * nn.functional.one_hot(guess0, classes).float(), dim=1)
    logp1 = torch.log_softmax(12.0 * nn.functional.one_hot(guess1, classes).float(), dim=1)
    stacked = torch.cat([logp0, logp1], dim=1)  # (N, 2 * C)
    flags = torch.ones(n, len(FLAGS))  # every product has both inputs

    gain = nn.Linear(len(FLAGS), 2)
    nn.init.zeros_(gain.weight)
    nn.init.ones_(gain.bias)  # plain sum: the sure member wins every disagreement
    fused_before = (stacked.view(n, 2, classes)).sum(dim=1).argmax(dim=1)
    fit_stack_gains(gain, flags, stacked, targets)
    g = gain(flags[:1])[0]
    fused_after = (g[None, :, None] * stacked.view(n, 2, classes)).sum(dim=1).argmax(dim=1)

    assert g[0] * 2.0 > g[1] * 12.0  # per unit of confidence, member 0 now weighs more
    accuracy = lambda p: (p == targets).float().mean().item()  # noqa: E731
    assert accuracy(fused_after) > accuracy(fused_before) + 0.2
    assert accuracy(fused_after) >= accuracy(guess0) - 0.02  # at least as good as the best
