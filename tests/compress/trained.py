"""Small models trained on digits, cached per test process so tests/compress and tests/bench share them."""
from functools import lru_cache

import torch
import torch.nn.functional as F

from kdforge.config import DataConfig
from kdforge.data import load_data
from kdforge.models.small import CNN, MLP


def _train(model, data, epochs: int, lr: float = 3e-3, batch: int = 64):
    x, y = data.train.x, data.train.y
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is faster, and immune to a busy second core
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(batch):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    torch.set_num_threads(threads)
    return model.eval()


@lru_cache(maxsize=None)
def digits():
    return load_data(DataConfig(name="digits"), 0)


@lru_cache(maxsize=None)
def digits_mlp():
    torch.manual_seed(0)
    return _train(MLP((1, 8, 8), 10, [128, 64]), digits(), epochs=15)


@lru_cache(maxsize=None)
def digits_cnn():
    torch.manual_seed(0)
    return _train(CNN((1, 8, 8), 10, [16, 32]), digits(), epochs=4, lr=1e-2, batch=128)


def accuracy(model, data) -> float:
    with torch.no_grad():
        return (model(data.test.x).argmax(-1) == data.test.y).float().mean().item()
