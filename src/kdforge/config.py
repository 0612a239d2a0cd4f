"""The recipe schema. A recipe is YAML (loaded with yaml.safe_load) holding values
and registry keys only: never import paths or code.

Every field is documented here; `kdforge run RECIPE --set distill.epochs=3`
overrides any field by its dotted path. Errors name the field, the bad value and
what is allowed.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

import kdforge.data  # noqa: F401  (registers datasets)
import kdforge.methods  # noqa: F401  (registers methods)
import kdforge.models  # noqa: F401  (registers models)
from kdforge.compress.config import CompressStage
from kdforge.config_terms import (  # noqa: F401  (re-exported: recipes and code name them as kdforge.config.*)
    LOSS_KINDS, TERM_CLASSES, Auto, DISTTerm, DivergenceTerm, DKDTerm, FeatureTerm, KDTerm, LabelTerm, LayerwiseTerm,
    LossTerm, Strict,
)
from kdforge.config_refuse import refuse_unused
from kdforge.config_sections import BornAgainConfig, DataFreeConfig, SearchConfig  # noqa: F401  (re-exported)
from kdforge.registry import DATASETS, METHODS, MODELS


class AugmentConfig(Strict):
    """In-domain transfer-set augmentation of text training sets (TinyBERT's DA, Jiao et al. 2020):
    `n` variants per training text, labelled by the teacher's soft targets (the labels of the
    variants are left empty, so label terms skip them). Only the training split is augmented."""

    n: int = Field(4, ge=1, description="Variants per training text.")
    replace: float = Field(0.3, ge=0, le=1, description="Probability that a whole-word token is replaced by one of its nearest "
                           "neighbours in the teacher's word-embedding space.")
    neighbours: int = Field(8, ge=1, description="Candidates per word (cosine nearest neighbours among whole-word tokens).")
    drop: float = Field(0.1, ge=0, lt=1, description="Probability that a word is dropped.")
    swap: float = Field(0.1, ge=0, le=1, description="Probability that a word swaps places with the next one.")


class DataConfig(Strict):
    name: str = Field("digits", description="Dataset registry key: digits | mnist5k | csv.")
    path: str | None = Field(None, description="File for file-backed datasets (csv; text-lm: .txt, or .jsonl / .parquet with "
                             "text_column; chat: .jsonl / .parquet / a `datasets` folder).")
    test_path: str | None = Field(None, description="Text datasets: a separate test file (an official test split); "
                                  "test_fraction then does not apply.")
    label_column: str = Field("label", description="Label column of a CSV file.")
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="Fraction held out for model selection.")
    test_fraction: float = Field(0.25, gt=0, lt=0.5, description="Fraction held out for the final test.")
    omit_classes: list[int] = Field(
        default_factory=list, description="Classes removed from the transfer set (train/val); test keeps them."
    )
    train_limit: int | None = Field(None, gt=0, description="Keep only this many training samples.")
    labelled: int | None = Field(None, gt=0, description="Keep labels on only the first N training samples; the rest is an "
                                 "unlabelled pool the teacher labels (the kd/dkd/dist terms use it, label terms skip it).")
    text_column: str = Field("text", description="Text datasets (csv / jsonl): the column holding the text.")
    tokenizer: str | None = Field(None, description="Text datasets: HF tokenizer (local folder, .gguf or alias minilm-l6 | smollm2-135m).")
    max_length: int = Field(128, ge=4, description="Text datasets: tokens per sample (truncated / padded).")
    val_path: str | None = Field(None, description="Text datasets: a separate validation file (a shipped validation split); "
                                 "val_fraction then does not apply.")
    augment: AugmentConfig | None = Field(None, description="Text classification: augment the training split with variants the "
                                          "teacher labels (needs a teacher with a word-embedding table).")
    messages_column: str = Field("messages", description="chat: the column of [{role, content}] turns (roles system | user | assistant).")
    prompt_column: str = Field("prompt", description="chat: without a messages column, the user turn's column (GSM8K: question).")
    completion_column: str = Field("completion", description="chat: without a messages column, the assistant turn's column (GSM8K: answer).")
    system_prompt: str | None = Field(None, description="chat: a system turn put before conversations that have none.")
    bad_rows: Literal["skip", "error"] = Field("skip", description="chat: a row that cannot be used (no assistant turn, unknown role, "
                                               "empty content, longer than max_length after the template): skip (counted, warned, "
                                               "recorded in the run's metrics) or error (the first one, by its row number).")
    test_limit: int | None = Field(None, gt=0, description="chat: keep only the first N test samples (a quicker held-out metric).")


class PruneConfig(Strict):
    """student.init: prune - Minitron structured pruning of the `hf` causal LM (Llama family) by activation importance
    on a calibration sample of the training data (kdforge.models.prune_llm). Sizes left null are kept."""

    hidden_size: int | None = Field(None, gt=0, description="Embedding channels kept (the model's width).")
    intermediate_size: int | None = Field(None, gt=0, description="MLP neurons kept per layer.")
    num_heads: int | None = Field(None, gt=0, description="Query heads kept per layer (the same number inside every kept KV group).")
    num_kv_groups: int | None = Field(None, gt=0, description="KV groups kept per layer (a group: one key/value head and its query heads).")
    num_layers: int | None = Field(None, gt=0, description="Layers kept (the most important, in their order).")
    samples: int = Field(64, ge=1, description="Training samples the importance is measured on (drawn with the recipe's seed).")
    batch_size: int = Field(8, ge=1, description="Calibration samples per forward pass.")
    layer_metric: Literal["perplexity", "block_importance"] = Field(
        "perplexity", description="Layer importance: the calibration loss increase when the layer alone is skipped "
        "(one pass per layer), or block importance 1 - cos(input, output) (one pass).")


class ModelConfig(Strict):
    name: str = Field("mlp", description="Model registry key: mlp | cnn.")
    hidden: list[Annotated[int, Field(gt=0)]] | None = Field(None, description="mlp: hidden widths.")
    channels: list[Annotated[int, Field(gt=0)]] | None = Field(None, description="cnn: channels per block.")
    dropout: float | None = Field(None, ge=0, lt=1, description="Dropout probability.")
    num_classes: int | None = Field(None, gt=1, description="Output classes; defaults to the dataset's.")
    checkpoint: str | None = Field(None, description="Trained weights (.safetensors); the teacher is trained first if absent.")
    # Hugging Face models (name: hf); see kdforge.models.hf
    hf: str | None = Field(None, description="hf: local model folder, .gguf file, or alias minilm-l6 | smollm2-135m.")
    task: Literal["classify", "embed", "causal_lm"] | None = Field(None, description="hf: classify (default) | embed | causal_lm.")
    layers: list[Annotated[int, Field(ge=0)]] | None = Field(None, description="hf student: keep these layers of `hf`, weights copied (DistilBERT: every other).")
    hidden_size: int | None = Field(None, gt=0, description="hf student: narrower hidden width (weights sliced from `hf`).")
    intermediate_size: int | None = Field(None, gt=0, description="hf student: feed-forward width.")
    num_heads: int | None = Field(None, gt=0, description="hf student: attention heads.")
    init: Literal["teacher", "random", "prune"] | None = Field(None, description="hf student: weights from `hf` (default), random init "
                                                               "from its config, or prune (causal LMs: the `prune:` sizes, kept by importance).")
    prune: PruneConfig | None = Field(None, description="hf causal-LM student with init: prune: the sizes to prune `hf` to.")
    attentions: bool | None = Field(None, description="hf: expose attention probabilities to taps (attn.<i>); uses eager attention.")
    trust_remote_code: bool | None = Field(None, description="hf: run Python code shipped with the model folder (off unless set; warns).")
    trim_vocab: bool | None = Field(None, description="hf student: keep only the special tokens and the tokens of the training "
                                    "(and augmented) corpus in the word embeddings; other ids read [UNK]. The model still takes the "
                                    "original tokenizer's ids (the remap is inside it, also in HF folders and ONNX graphs).")
    vocab_min_count: int | None = Field(None, ge=1, description="hf student with trim_vocab: keep tokens seen at least this often (default 1).")

    @model_validator(mode="after")
    def _prune_fields(self) -> "ModelConfig":
        if self.prune is not None and self.init != "prune":
            raise ValueError("prune: sizes to prune to are read with init: prune; add it (or remove prune:)")
        if self.init == "prune":
            if self.prune is None:
                raise ValueError("init: prune needs a prune: section with the sizes to keep (hidden_size, intermediate_size, "
                                 "num_heads or num_kv_groups, num_layers)")
            if self.task != "causal_lm":
                raise ValueError(f"init: prune prunes causal LMs (task: causal_lm), got task {self.task!r}")
            given = [f for f in ("layers", "hidden_size", "intermediate_size", "num_heads") if getattr(self, f) is not None]
            if given:
                raise ValueError(f"init: prune takes its sizes from prune:, not from {', '.join(given)}; move them into prune:")
        return self

    def builder_kwargs(self) -> dict[str, Any]:
        options = self.model_dump(include={"hidden", "channels", "dropout", "hf", "task", "layers", "hidden_size",
                                           "intermediate_size", "num_heads", "init", "attentions", "trust_remote_code"})
        return {k: v for k, v in options.items() if v is not None}


class TrainConfig(Strict):
    epochs: int = Field(20, ge=1, description="Passes over the training set (with `patience`: the most it may take).")
    patience: int | None = Field(None, ge=1, description="Stop once this many epochs pass without a better val metric (null: run every epoch).")
    batch_size: int = Field(64, ge=1, description="Samples per optimizer micro-batch (per process).")
    lr: float = Field(3e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="LR schedule after warm-up.")
    warmup_fraction: float = Field(0.0, ge=0, lt=1, description="Fraction of steps with linear warm-up.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step.")
    max_grad_norm: float | None = Field(5.0, gt=0, description="Gradient clipping norm (null: off).")
    checkpoint_every: int = Field(0, ge=0, description="Also save a resumable checkpoint every N optimizer steps (0: per epoch only).")
    checkpoint_interval: float = Field(10.0, ge=0, description="Seconds between per-epoch checkpoints: an epoch ending sooner skips its save (the last epoch always saves; 0: every epoch).")
    on_nonfinite: Literal["stop", "skip"] = Field("stop", description="NaN/inf loss: stop (keep last good checkpoint) or skip the step.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="Autocast dtype (auto: bf16 on GPU, fp32 on CPU).")
    parallel: Literal["auto", "ddp", "fsdp"] = Field("auto", description="Several processes: DDP (auto) or FSDP2 sharding.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes fetching batches.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (null: epochs decide).")
    log_every: int = Field(50, ge=1, description="Read the running losses (one host sync) every N optimizer steps.")
    eval_every: int | None = Field(None, ge=1, description="Also validate every N optimizer steps (null: per epoch only).")
    tracker: Literal["auto", "none", "tensorboard", "wandb"] = Field(
        "auto", description="Experiment tracker (auto: TensorBoard when installed, W&B when installed and logged in).")


class FilterConfig(Strict):
    """Confidence filtering of teacher mistakes, applied to the soft-target terms."""

    mode: Literal["none", "drop", "downweight"] = Field("none", description="drop: weight 0; downweight: weight = teacher prob of the true class.")
    drop_wrong: bool = Field(True, description="Filter samples whose teacher argmax is not the label.")
    min_confidence: float = Field(0.0, ge=0, le=1, description="Filter samples whose teacher max-probability is below this.")


class LMConfig(Strict):
    """Causal-LM distillation settings (methods token_kd | sequence_kd | gkd | reasoning)."""

    chunk_size: int | None = Field(128, ge=1, description="Positions per chunk when computing divergences (null: no chunking).")
    lmbda: float = Field(0.5, ge=0, le=1, description="gkd: fraction of batches on student-generated sequences (on-policy).")
    max_new_tokens: int = Field(32, ge=1, description="Tokens generated per prompt (sequence_kd, gkd, reasoning).")
    gen_temperature: float = Field(1.0, gt=0, description="Sampling temperature of generations.")
    prompt_tokens: int = Field(16, ge=1, description="sequence_kd / gkd on a text file: prompt length cut from each window.")
    template: str = Field("Question: {question}\nLet's think step by step.\n", description="reasoning: prompt template.")
    answer_weight: float = Field(1.0, ge=0, description="reasoning: weight of the answer task next to the rationale task.")
    cross_tokenizer: Literal["uld", "gold"] | None = Field(
        None, description="token_kd with a teacher whose tokenizer differs from the student's (text-lm data): the two tokenizations "
        "are aligned by the characters they cover and each aligned span scored by uld (Boizard et al. 2024: L1 between sorted "
        "probabilities) or gold (exact KL on the tokens both vocabularies share, ULD on the rest); the kd term's temperature and "
        "alpha apply. null: teacher and student share one tokenizer (checked).")
    uld_top_k: int | None = Field(None, ge=1, description="cross_tokenizer: ULD compares the k largest probabilities of each side exactly "
                                  "and the rest by their total mass (a sort of the whole vocabulary per span is slow on CPU); null: exact.")


class AutoConfig(Strict):
    """What `temperature: auto` / `alpha: auto` may cost: `trials` students of `epochs` epochs each (see kdforge.tuning)."""

    trials: int = Field(8, ge=1, description="Students trained by the search (trial 0 is the default T=4, α=0.8; trial 1 "
                        "α=0, the labels alone).")
    epochs: int | None = Field(None, ge=1, description="Epochs per trial; null: distill.epochs.")
    holdout_fraction: float = Field(0.2, gt=0, lt=0.5, description="Part of the training split held out to score trials.")
    temperature: list[float] = Field([0.5, 10.0], description="[low, high] searched for an auto temperature (log scale; "
                                     "below 1 sharpens an under-confident teacher).")
    alpha: list[float] = Field([0.0, 1.0], description="[low, high] searched for an auto alpha.")

    @model_validator(mode="after")
    def _ranges(self) -> "AutoConfig":
        t, a = self.temperature, self.alpha
        if len(t) != 2 or not 0 < t[0] < t[1]:
            raise ValueError(f"temperature: expected a positive range [low, high] with low < high, got {t}")
        if len(a) != 2 or not 0 <= a[0] < a[1] <= 1:
            raise ValueError(f"alpha: expected a range [low, high] inside [0, 1] with low < high, got {a}")
        return self


class DistillConfig(TrainConfig):
    losses: list[LossTerm] = Field(default_factory=lambda: [KDTerm()], min_length=1, description="Weighted loss terms.")
    auto: AutoConfig = Field(default_factory=AutoConfig, description="Budget of the search behind kd `temperature: auto` / `alpha: auto`.")
    bias_calibration: Literal["none", "teacher", "labels"] = Field(
        "none", description="After training, fit per-class logit biases (Hinton et al. §3) on the validation split (with "
        "any omitted classes): to the teacher's probabilities (no labels needed) or to the labels; reported before/after, "
        "and the calibrated student is the one compressed.")
    filter: FilterConfig = Field(default_factory=FilterConfig)
    intermediate_epochs: int = Field(0, ge=0, description="TinyBERT's two-phase schedule: first this many epochs of the feature "
                                     "terms alone (layerwise, hint, attention...; live teacher, the original training texts), then "
                                     "`epochs` of the other terms (kd, ce...). 0: every term together.")
    lm: LMConfig = Field(default_factory=LMConfig, description="Causal-LM distillation settings.")
    control: Literal["auto"] | bool = Field(
        "auto", description="Also train the same student on the labels alone (same init and schedule), report KD against "
        "it and keep the better of the two by validation (kdforge.control); auto: on for a labelled classification run "
        "whose student has at most half the teacher's parameters.")


class StoreConfig(Strict):
    """Teacher-output store written by `kdforge cache-teacher` and read instead of the live teacher."""

    path: str = Field(..., description="Folder of the store.")
    k: Annotated[int, Field(ge=1)] | Literal["all"] | None = Field(None, description="Vocabulary ids kept per position: top-k logits, "
                                                                   "or k sampled ids (sampling: priority, random...); all (or k >= classes): dense "
                                                                   "logits; null: 64 (every class of a smaller head).")
    sampling: Literal["topk", "random", "hybrid", "ht", "priority"] = Field(
        "priority", description="priority: k distinct ids by priority sampling, weights max(p, tau) (unbiased forward KL, "
        "the least noise per id: the default); random: K draws from the teacher's softmax, kept as ids + weights (unbiased, "
        "Anshumann et al. 2025); hybrid: the k/2 most likely ids exactly + k/2 draws from the rest (unbiased); "
        "ht: the K draws weighted p / (1 - (1 - p)^K) (Horvitz-Thompson); topk: the k largest logits (biased).")
    temperature: float | None = Field(None, gt=0, description="Temperature the store samples at and is meant for (part of its "
                                      "fingerprint); null: the kd term's temperature, else 1.")
    features: list[str] = Field(default_factory=list, description="Teacher modules whose outputs are stored too.")
    shard_size: int = Field(1024, ge=1, description="Samples per shard file.")
    dtype: Literal["float16", "float32"] = Field("float16", description="Storage type of logits and features.")
    weights: Literal["float16", "uint8", "packed"] = Field(
        "float16", description="Storage of a sampled store's weights: uint8 log-grid codes, rounded stochastically (still "
        "unbiased) at 1 byte instead of 2; packed (sampling: random only): ids and draw counts packed losslessly "
        "(Elias-Fano), about 2 bytes per id - 64 draws fit in the bytes of top-16.")

    @model_validator(mode="after")
    def _packed_needs_random(self) -> "StoreConfig":
        if self.weights == "packed" and self.sampling != "random":
            raise ValueError(f"weights: packed keeps draw counts, so it needs sampling: random (got sampling: {self.sampling})")
        return self


class TeacherConfig(ModelConfig):
    train: TrainConfig = Field(default_factory=TrainConfig, description="Used when no checkpoint is given; with `correct`, the fine-tune's settings.")
    correct: bool = Field(False, description="hf causal-LM teacher: fine-tune it on the distillation data first (next-token "
                          "cross-entropy with the `train` settings; teacher correction, Sreenivas et al. 2024); the student is "
                          "pruned from and distilled by the corrected teacher, and a store is written from it.")

    @model_validator(mode="after")
    def _correct_causal(self) -> "TeacherConfig":
        if self.correct and (self.name != "hf" or self.task != "causal_lm"):
            raise ValueError("correct: teacher correction fine-tunes an hf causal LM (name: hf, task: causal_lm); "
                             "other teachers are trained by the run unless a checkpoint is given")
        if self.init == "prune":
            raise ValueError("init: prune builds students; a teacher is the model as given")
        return self


class MutualConfig(Strict):
    """method: mutual (deep mutual learning, Zhang et al. 2018): peers trained together from scratch."""

    peers: list[ModelConfig] | None = Field(
        None, description="Peer networks (at least 2; same or different models). null: `count` copies of the student section."
    )
    count: int = Field(2, description="Number of student copies when `peers` is null (at least 2).")
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of the peer-to-peer KL.")
    weight: float = Field(1.0, ge=0, description="Weight of the KL to the other peers (0: every peer trains alone).")

    @model_validator(mode="after")
    def _at_least_two(self) -> "MutualConfig":
        n = len(self.peers) if self.peers is not None else self.count
        if n < 2:
            where = "peers" if self.peers is not None else "count"
            raise ValueError(f"{where}: mutual learning needs at least 2 peers, got {n}")
        return self


class EnsembleConfig(Strict):
    """method: multi_teacher: soft targets from several teachers combined into one distribution."""

    teachers: list[TeacherConfig] | None = Field(
        None, description="Teacher models; null: `count` copies of the teacher section, seeded differently."
    )
    count: int = Field(3, ge=1, description="Number of teacher copies when `teachers` is null.")
    weighting: Literal["mean", "fixed", "confidence"] = Field(
        "mean", description="mean: equal weights; fixed: `weights`; confidence: per sample, by each teacher's max probability."
    )
    weights: list[Annotated[float, Field(ge=0)]] | None = Field(None, description="Fixed weights, one per teacher (weighting: fixed).")

    @model_validator(mode="after")
    def _weights_fit(self) -> "EnsembleConfig":
        n = len(self.teachers) if self.teachers is not None else self.count
        if self.weighting == "fixed" and (self.weights is None or len(self.weights) != n or sum(self.weights) <= 0):
            raise ValueError(f"weights: weighting 'fixed' needs {n} non-negative weights with a positive sum, got {self.weights}")
        return self


class Recipe(Strict):
    seed: int = Field(0, description="Seeds data splits, initialisation and data order.")
    run_dir: str = Field("runs/run", description="Where the run directory is written.")
    method: str = Field("standard", description="Method registry key: standard | supervised | ...")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto uses a GPU when one is visible.")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=lambda: TeacherConfig(hidden=[256, 256]))
    student: ModelConfig = Field(default_factory=lambda: ModelConfig(hidden=[32]))
    distill: DistillConfig = Field(default_factory=DistillConfig)
    compress: list[CompressStage] = Field(default_factory=list, description="Compression stages, in order (see kdforge.compress.config).")
    store: StoreConfig | None = Field(None, description="Teacher-output store: training reads it instead of running the teacher.")
    # a method's own section, set under another method, is refused (config_refuse: what each method reads)
    mutual: MutualConfig = Field(default_factory=MutualConfig, description="method: mutual only.")
    born_again: BornAgainConfig = Field(default_factory=BornAgainConfig, description="method: born_again only.")
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig, description="method: multi_teacher only.")
    data_free: DataFreeConfig = Field(default_factory=DataFreeConfig, description="method: data_free only.")
    search: SearchConfig = Field(default_factory=SearchConfig, description="`kdforge search` only.")

    @model_validator(mode="after")
    def _check_keys(self) -> "Recipe":
        for field, reg, key in (
            ("data.name", DATASETS, self.data.name),
            ("method", METHODS, self.method),
            ("teacher.name", MODELS, self.teacher.name),
            ("student.name", MODELS, self.student.name),
        ):
            if key not in reg:
                raise ValueError(f"{field}: unknown {reg.kind} {key!r}; valid: {', '.join(reg.keys())}")
        refuse_unused(self)  # compress stages, hf tasks, 'auto', and every field the method does not read
        # z-scores need every class's logit: a k the recipe sets below "all" cannot give them; the default
        # (null: 64) keeps every class of a smaller head, and the method refuses a store that kept fewer
        full_logits = self.store is None or self.store.k in ("all", None)
        recommended = with_recommended_losses(self.distill, self.method, standardize=full_logits,
                                              text_student=self.student.name == "hf")
        if recommended is not self.distill:
            self.distill = recommended
        if self.store is not None and self.store.k not in ("all", None) and any(getattr(t, "standardize", False) for t in self.distill.losses):
            raise ValueError(f"store.k: kd with standardize: true z-scores the teacher's logits over every class, "
                             f"so the store must keep them all (k: all), got k: {self.store.k}")
        return self


def recommended_losses(standardize: bool = True) -> list:
    """What kdforge recommends for teacher -> student classification when a recipe sets no losses: KD on
    standardized logits (Sun et al. 2024) with T and α searched on held-out training data (kdforge.tuning);
    benchmarks/kd_gain.py measures it against the student alone and vanilla KD. Without the teacher's full
    logits (a top-k store) the logits are not standardized."""
    return [KDTerm(temperature="auto", alpha="auto", standardize=standardize)]


TEXT_AUTO = {"trials": 4, "epochs": 1}  # a text student's search: the default, α = 0 and two points, one epoch each


def with_recommended_losses(cfg: DistillConfig, method: str, standardize: bool = True,
                            text_student: bool = False) -> DistillConfig:
    """`cfg` with the recommended losses when the user gave none and `method` is standard; else `cfg` itself.
    A text (hf) student's search gets the budget TEXT_AUTO unless the recipe sets `distill.auto`: four
    one-epoch trials on 80% of train, about one distillation of a few epochs, where each trial is a fine-tune."""
    if method != "standard" or "losses" in cfg.model_fields_set:
        return cfg
    update: dict = {"losses": recommended_losses(standardize)}
    if text_student and "auto" not in cfg.model_fields_set:
        update["auto"] = cfg.auto.model_copy(update=TEXT_AUTO)
    out = cfg.model_copy(update=update)
    out.model_fields_set.update(update)
    return out
