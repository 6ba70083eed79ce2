"""The RWS reference's schedule: MultiStepLR at epochs [20, 40] of 50, gamma 0.1, stepped after each epoch."""

import pytest

from robustsoup.train.loop import learning_rate


def test_multistep_is_the_reference_multisteplr_by_whole_epochs():
    import torch

    per_epoch, epochs, lr = 7, 50, 0.01
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    reference = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[20, 40], gamma=0.1)
    for epoch in range(epochs):
        expected = optimizer.param_groups[0]["lr"]
        for i in range(per_epoch):
            got = learning_rate("multistep", lr, epoch * per_epoch + i, epochs * per_epoch, per_epoch)
            assert got == pytest.approx(expected, rel=1e-12), (epoch, i)
        optimizer.step()
        reference.step()
