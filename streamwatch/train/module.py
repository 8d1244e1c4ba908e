"""The LSTM forecaster as a torch module: next-reading mean and scale per step."""

from __future__ import annotations

import torch
from torch import nn

LOG_SIGMA_BOUND = 7.0  # sigma in [e^-7, e^7] z units; the ONNX graph clips the same way


class Forecaster(nn.Module):
    """LSTM layers, then a linear head giving ``mu`` and ``log sigma`` for each target.

    ``mu`` is a residual on the current reading (targets are the first features): the network
    learns the change to the next reading, so "next equals this one" is where it starts.

    >>> m = Forecaster(n_features=1, n_targets=1, hidden_size=8, layers=2)
    >>> mu, sigma, (h, c) = m(torch.zeros(3, 5, 1))
    >>> tuple(mu.shape), tuple(h.shape)
    ((3, 5, 1), (2, 3, 8))
    """

    def __init__(
        self, n_features: int, n_targets: int, hidden_size: int, layers: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.n_features, self.n_targets = n_features, n_targets
        self.hidden_size, self.layers = hidden_size, layers
        self.lstm = nn.LSTM(
            n_features,
            hidden_size,
            layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.head = nn.Linear(hidden_size, 2 * n_targets)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        out, new_state = self.lstm(x, state)
        delta, log_sigma = self.head(out).chunk(2, dim=-1)
        mu = x[..., : self.n_targets] + delta
        sigma = torch.exp(torch.clamp(log_sigma, -LOG_SIGMA_BOUND, LOG_SIGMA_BOUND))
        return mu, sigma, new_state

    def step_packed(
        self, x: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step with the serving layout: x (batch, features), state (batch, 2*L*H)."""
        h, c = unpack_state(state, self.layers, self.hidden_size)
        mu, sigma, (h, c) = self(x[:, None, :], (h, c))
        return mu[:, 0], sigma[:, 0], pack_state(h, c)


def pack_state(h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(layers, batch, H) twice -> (batch, 2*layers*H) as [h0, c0, h1, c1, ...]."""
    parts = []
    for layer in range(h.shape[0]):
        parts += [h[layer], c[layer]]
    return torch.cat(parts, dim=1)


def unpack_state(
    state: torch.Tensor, layers: int, hidden: int
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = state.reshape(state.shape[0], layers, 2, hidden)
    h = rows[:, :, 0, :].permute(1, 0, 2).contiguous()
    c = rows[:, :, 1, :].permute(1, 0, 2).contiguous()
    return h, c
