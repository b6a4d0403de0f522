"""Model speed options: channels_last chosen automatically (with its NCHW fallback) and compiled forwards."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from lit_infer import PredictionModule
from lit_infer.nets import TinyCNN


class ViewFlatten(nn.Module):
    """An old-style network that flattens with ``view``: it cannot take channels_last activations."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).view(x.shape[0], -1))


def test_auto_channels_last_runs_the_net_in_it_on_cpu_with_plain_input() -> None:
    module = PredictionModule(net=TinyCNN(width=4, depth=2))
    module.on_predict_start()
    assert module.net_channels_last and not module.use_channels_last
    assert module.net.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    explicit = PredictionModule(net=TinyCNN(width=4, depth=2), channels_last=False)
    explicit.on_predict_start()
    assert not explicit.net_channels_last


def test_a_view_flattening_net_falls_back_to_nchw_with_the_same_outputs() -> None:
    torch.manual_seed(0)
    net = ViewFlatten().eval()
    x = torch.randn(3, 3, 8, 8)
    with torch.inference_mode():
        expected = net(x)
        module = PredictionModule(net=net)
        module.on_predict_start()  # channels_last: null -> the net goes channels_last on CPU
        out = module(x)
    torch.testing.assert_close(out, expected)
    assert module._nchw_fallback and not module.net_channels_last


def test_explicit_channels_last_does_not_hide_the_error() -> None:
    module = PredictionModule(net=ViewFlatten().eval(), channels_last=True)
    module.on_predict_start()
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        module(x)
