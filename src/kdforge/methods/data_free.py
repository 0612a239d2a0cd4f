"""Data-free distillation: a generator replaces the training data.

DAFL (Chen et al. 2019, "Data-Free Learning of Student Networks") and
DeepInversion (Yin et al. 2020, "Dreaming to Distill"): a generator G(z) learns
to produce inputs that the frozen teacher classifies
  - confidently (one-hot loss: CE of the teacher's logits to its own argmax),
  - with balanced classes over a batch (information entropy: log C − H(mean p_t)),
  - with the batch statistics stored in the teacher's BatchNorm layers
    (Σ_l ‖μ_l(x) − μ_l‖₂ + ‖σ²_l(x) − σ²_l‖₂, when the teacher has BatchNorm),
  - optionally where student and teacher still disagree (adversarial, DFAD, Fang et al. 2019),
while the student learns KL(p_t ‖ p_s) on the generated inputs only.

How it plugs into the one loop: the loop iterates over a dataset, so the workflow
(kdforge.workflows.data_free) feeds it `NoiseSeeds` — N placeholder items, no images. `step` ignores their
content and draws z from torch's global RNG, which the loop seeds and
checkpoints (so a resumed run draws the same noise). Generator and student are
both parameters of the method: one optimizer, one step. The student's loss sees the
generated batch detached, and the generator's losses reach only the generator
(the teacher's parameters are frozen; its input gradient is what G learns from).

The student never sees a training image. Validation (model selection per epoch)
uses the held-out real validation split, as every method does; the test split
is used once at the end. Generated inputs pass through a sigmoid: the built-in
image datasets are scaled to [0, 1].
"""
from __future__ import annotations

import math

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import Dataset

from kdforge.errors import KDForgeError
from kdforge.losses.multi import kl_to_targets
from kdforge.methods.base import Method, register_method
from kdforge.teacher import Teacher


class NoiseSeeds(Dataset):
    """`n` placeholder samples (x = 0, y = −1): sets how many generated batches make an epoch."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return torch.zeros(()), torch.tensor(-1)


class Generator(nn.Module):
    """z (B, latent) -> Linear-BN-ReLU ×2 -> Linear -> sigmoid -> (B, *input_shape) in [0, 1]."""

    def __init__(self, latent_dim: int, input_shape: tuple[int, ...], hidden: int = 256):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, math.prod(self.input_shape)),
        )

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.net(z)).view(len(z), *self.input_shape)


class BNStatTaps:
    """Forward hooks on every BatchNorm of a (frozen, eval-mode) model: the distance between
    each layer's input batch statistics and its stored running statistics (DeepInversion R_feature)."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.terms: list[Tensor] = []
        self.recording = True  # off while the teacher is used for anything else (e.g. evaluation)
        self.handles = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.Module, inputs: tuple[Tensor], output: Tensor) -> None:
        if not self.recording:
            return
        x = inputs[0]
        dims = [0] + list(range(2, x.dim()))  # all but the channel axis
        mean, var = x.mean(dims), x.var(dims, unbiased=False)  # (C,)
        self.terms.append(torch.norm(mean - module.running_mean, 2) + torch.norm(var - module.running_var, 2))

    def __deepcopy__(self, memo: dict) -> "BNStatTaps":
        # it taps the frozen teacher, which a deep copy of the method shares (FSDP2 trains a copy): so is this
        return self

    def pop(self) -> Tensor | None:
        out = sum(self.terms) if self.terms else None
        self.terms = []
        return out


def information_entropy_loss(t_logits: Tensor) -> Tensor:
    """DAFL L_ie = log C − H(mean_b softmax(z_b)): 0 when the batch covers the classes evenly. (B, C) -> scalar."""
    p_mean = F.softmax(t_logits, dim=-1).mean(0)  # (C,)
    return math.log(t_logits.shape[-1]) + (p_mean * p_mean.clamp_min(1e-12).log()).sum()


@register_method("data_free", workflow="data_free", section="data_free")
class DataFreeKD(Method):
    """Generator + student trained together from a frozen classifier teacher; `cfg` is distill:, `section` data_free:."""

    shard_blocks = False  # the adversarial term runs the student through functional_call (detached weights)

    def __init__(self, student: nn.Module, teacher: nn.Module | Teacher, cfg, probe: dict[str, Tensor], section):
        super().__init__()
        self.opt = section  # the recipe's data_free: section (config.DataFreeConfig)
        self.teacher = teacher if isinstance(teacher, Teacher) else Teacher(teacher)
        shape = tuple(probe["x"].shape[1:])
        try:
            with torch.no_grad():
                out = self.teacher.model(torch.rand(2, *shape))
        except Exception as e:  # a text or sequence model cannot take generated image/feature tensors
            raise KDForgeError(f"teacher: data_free needs a classifier teacher taking (batch, {', '.join(map(str, shape))}) "
                               f"inputs; calling it on generated inputs failed: {str(e).splitlines()[0][:200]}") from None
        logits = getattr(out, "logits", out)
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[-1] < 2:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(out).__name__
            raise KDForgeError(f"teacher: data_free needs a classifier teacher returning (batch, classes) logits; got {got}")
        was = student.training
        student.eval()
        with torch.no_grad():
            s_classes = student(torch.rand(2, *shape)).shape[-1]
        student.train(was)
        if s_classes != logits.shape[-1]:
            raise KDForgeError(f"teacher predicts {logits.shape[-1]} classes but student predicts {s_classes}; they must match")
        self.student = student
        self.generator = Generator(self.opt.latent_dim, shape, self.opt.generator_hidden)
        self.bn = BNStatTaps(self.teacher.model)
        self.bn.recording = False

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        # The batch's contents are placeholders (see NoiseSeeds); only its size is used.
        b = len(batch["idx"])
        o = self.opt
        # (B, latent) from the loop-seeded RNG: every rank draws the whole job's noise and keeps its own
        # slice, so N processes see the same generated inputs as one process with N times the batch
        world, rank = (tdist.get_world_size(), tdist.get_rank()) if tdist.is_initialized() else (1, 0)
        z = torch.randn(b * world, o.latent_dim, device=batch["idx"].device)[rank * b:(rank + 1) * b]
        x = self.generator(z)  # (B, *input_shape)
        self.bn.recording = True
        t_logits = self.teacher.model(x)  # frozen weights; gradient flows to x only
        self.bn.recording = False
        self.teacher.calls += 1
        self.teacher.samples += b
        t_logits = getattr(t_logits, "logits", t_logits)  # (B, C)
        bn = self.bn.pop()
        losses = {
            "gen_onehot": o.onehot_weight * F.cross_entropy(t_logits, t_logits.argmax(-1)),
            "gen_entropy": o.entropy_weight * information_entropy_loss(t_logits),
        }
        if bn is not None and o.bn_weight:
            losses["gen_bn"] = o.bn_weight * bn
        if o.adversarial_weight:
            # The generator seeks disagreement; the student's weights are detached for this term.
            frozen = {k: v.detach() for k, v in self.student.named_parameters()}
            s_adv = functional_call(self.student, frozen, (x,))
            losses["gen_adversarial"] = -o.adversarial_weight * (s_adv.softmax(-1) - t_logits.softmax(-1)).abs().sum(-1).mean()
        self.counters["generated"] += b
        s_logits = self.student(x.detach())  # (B, C): the student sees generated inputs only
        losses["kd"] = kl_to_targets(s_logits, F.softmax(t_logits.detach() / o.temperature, -1), o.temperature)
        return losses
