"""Task metrics for a model on a dataset (classification: accuracy, loss, per-class accuracy)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from kdforge.train.data import fetch_batch


def model_device(model: nn.Module) -> torch.device:
    """Where the model lives (its first parameter or buffer); CPU for a model with neither."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 256,
            device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, C), labels (N,)) for a whole dataset, in order, computed on `device` (default: the model's own)."""
    device = device if device is not None else model_device(model)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for start in range(0, len(dataset), batch_size):  # whole batches fetched at once where the dataset can
        batch = fetch_batch(dataset, range(start, min(start + batch_size, len(dataset))))
        out = model(batch["x"].to(device))
        logits.append((out.logits if hasattr(out, "logits") else out).float().cpu())
        labels.append(batch["y"])
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def classification_metrics(model: nn.Module, dataset: Dataset, device: torch.device | str | None = None,
                           classes: list[int] | None = None) -> dict[str, float]:
    """accuracy and mean cross-entropy; with `classes`, also accuracy on each of those classes."""
    logits, y = predict(model, dataset, device=device)
    pred = logits.argmax(-1)
    out = {"accuracy": (pred == y).float().mean().item(), "loss": F.cross_entropy(logits, y).item()}
    for c in classes or []:
        sel = y == c
        out[f"accuracy_class_{c}"] = (pred[sel] == c).float().mean().item() if sel.any() else float("nan")
    return out

