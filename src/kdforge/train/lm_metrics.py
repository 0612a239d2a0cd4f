"""Language-model metrics for `fit(metric_fn=...)`: held-out perplexity over scored tokens."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from kdforge.train.evaluate import model_device


ECE_BINS = 15


@torch.no_grad()
def perplexity_metrics(model: nn.Module, dataset: Dataset, device: torch.device | str | None = None,
                       batch_size: int = 16) -> dict[str, float]:
    """exp(mean next-token cross-entropy) over the tokens each sample's loss_mask scores.

    dataset yields {"input_ids": (T,), "loss_mask": (T,)}; model(ids (B, T)) -> (B, T, V).
    Returns loss (nats/token), perplexity, neg_perplexity (for `select`, which maximises),
    accuracy (top-1 next-token) and ece: the expected calibration error of the top-1
    next-token probability (15 equal-width confidence bins, Guo et al. 2017). When the samples
    carry "token_bytes" (T,) (the UTF-8 bytes each token accounts for), also bpb: bits per byte,
    the scored tokens' total NLL / ln 2 / their bytes, which compares models whose tokenizers differ.
    """
    device = device if device is not None else model_device(model)
    was = model.training
    model.eval()
    total, count, correct, nbytes = 0.0, 0.0, 0.0, 0.0
    has_bytes = len(dataset) > 0 and "token_bytes" in dataset[0]
    bin_n, bin_conf, bin_hit = (torch.zeros(ECE_BINS, dtype=torch.float64) for _ in range(3))
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        ids = torch.stack([it["input_ids"] for it in items]).to(device)  # (B, T)
        mask = torch.stack([it["loss_mask"] for it in items]).to(device)[:, 1:].float()  # targets scored
        logits = model(ids)[:, :-1].float()  # (B, T-1, V) predicts ids[:, 1:]
        ce = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (B, T-1)
        total += float((ce * mask).sum())
        conf, pred = logits.softmax(-1).max(-1)  # (B, T-1)
        hit = (pred == ids[:, 1:]).float()
        correct += float((hit * mask).sum())
        count += float(mask.sum())
        if has_bytes:
            nbytes += float((torch.stack([it["token_bytes"] for it in items])[:, 1:].to(mask) * mask).sum())
        keep = mask.bool()
        b = (conf[keep] * ECE_BINS).long().clamp_(max=ECE_BINS - 1).cpu()
        bin_n += torch.bincount(b, minlength=ECE_BINS).double()
        bin_conf += torch.bincount(b, weights=conf[keep].double().cpu(), minlength=ECE_BINS)
        bin_hit += torch.bincount(b, weights=hit[keep].double().cpu(), minlength=ECE_BINS)
    model.train(was)
    loss = total / max(count, 1.0)
    ppl = math.exp(min(loss, 50.0))
    ece = float((bin_conf - bin_hit).abs().sum() / max(count, 1.0))  # Σ_bins |Σ conf − Σ hit| / N
    out = {"loss": loss, "perplexity": ppl, "neg_perplexity": -ppl, "accuracy": correct / max(count, 1.0), "ece": ece}
    if has_bytes and nbytes > 0:
        out["bpb"] = total / math.log(2) / nbytes
    return out


__all__ = ["perplexity_metrics"]
