"""Chat / instruction data for causal-LM distillation (`data.name: chat`).

Reads JSONL, Parquet or a `datasets` folder (see kdforge.data.rows) whose rows hold either a
list of turns `messages: [{role, content}, ...]` (roles system | user | assistant) or one
`prompt` + `completion` pair (a user turn and an assistant turn; the column names are
`data.prompt_column` / `data.completion_column`, so GSM8K's question / answer read as they are).

Each conversation is rendered with the tokenizer's own chat template. Only the assistant's
tokens are scored: `loss_mask` is 1 on the characters each assistant turn adds to the rendered
text (its content and its end-of-turn token; the template's role header, the system and user
turns and the padding are 0), so KD and cross-entropy train the student on answers only, and
the held-out perplexity is the answers' perplexity.

Samples are right-padded to `data.max_length`, not packed: in a causal LM a token never
attends to the padding on its right, so no attention mask is needed and one conversation can
never see, or be scored on, another; packing would need per-document position ids and a
block-diagonal attention mask in every model kdforge runs (the teacher, the student, the store
writer, ONNX export). Padding costs compute on short rows; set max_length near the long rows.

Rows that cannot be used are never dropped silently. Each is one of BAD_KINDS; with
`data.bad_rows: error` the first one is an error naming its row, with `skip` (the default)
they are counted per kind, warned about with their first rows, and the counts are kept on
the dataset (`skipped`) for the run's metrics.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

from kdforge.data.base import DataBundle
from kdforge.data.offsets import char_to_byte, token_bytes
from kdforge.data.rows import read_rows, read_splits
from kdforge.errors import KDForgeError
from kdforge.models.hf import load_tokenizer
from kdforge.registry import DATASETS

ROLES = ("system", "user", "assistant")
BAD_KINDS = {
    "malformed": "not a list of {role, content} turns",
    "unknown_role": f"a turn whose role is not one of {', '.join(ROLES)}",
    "empty_content": "a turn with empty content",
    "no_assistant": "no assistant turn (nothing to learn from)",
    "template": "the chat template renders the conversation differently turn by turn (the assistant's tokens cannot be found)",
    "too_long": "longer than data.max_length after the chat template",
}


class BadRow(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind, self.detail = kind, detail


class ChatDataset(Dataset):
    """Padded conversations: {"input_ids", "loss_mask" (assistant tokens), "attention_mask" (real tokens)}, each (L,)."""

    def __init__(self, ids: torch.Tensor, loss_mask: torch.Tensor, attention_mask: torch.Tensor,
                 skipped: dict[str, int] | None = None, token_bytes: torch.Tensor | None = None):
        self.ids, self.loss_mask, self.attention_mask = ids.long(), loss_mask.long(), attention_mask.long()  # (N, L) each
        self.skipped = dict(skipped or {})
        self.token_bytes = token_bytes  # (N, L) UTF-8 bytes each token accounts for (bits per byte), or None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        item = {"input_ids": self.ids[i], "loss_mask": self.loss_mask[i], "attention_mask": self.attention_mask[i]}
        if self.token_bytes is not None:
            item["token_bytes"] = self.token_bytes[i]
        return item

    def subset(self, keep) -> "ChatDataset":
        keep = torch.as_tensor(np.asarray(keep, dtype=np.int64))
        nbytes = None if self.token_bytes is None else self.token_bytes[keep]
        return ChatDataset(self.ids[keep], self.loss_mask[keep], self.attention_mask[keep], None, nbytes)  # skips belong to the file


def row_messages(row: dict, cfg) -> list[dict]:
    """One row -> its turns [{role, content}]; a row that cannot be used raises BadRow."""
    if row.get(cfg.messages_column) is not None:
        turns = row[cfg.messages_column]
        if not isinstance(turns, (list, tuple)) or not turns:
            raise BadRow("malformed", f"{cfg.messages_column!r} is {type(turns).__name__}, not a list of turns")
        out = []
        for k, m in enumerate(turns, 1):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise BadRow("malformed", f"turn {k} is not a mapping with role and content")
            if m["role"] not in ROLES:
                raise BadRow("unknown_role", f"turn {k} has role {m['role']!r} (expected one of {', '.join(ROLES)})")
            if not isinstance(m["content"], str) or not m["content"].strip():
                raise BadRow("empty_content", f"turn {k} ({m['role']}) has empty content")
            out.append({"role": m["role"], "content": m["content"]})
    else:
        out = []
        for role, column in (("user", cfg.prompt_column), ("assistant", cfg.completion_column)):
            value = row.get(column)
            if not isinstance(value, str) or not value.strip():
                raise BadRow("empty_content", f"{column!r} ({role} turn) is empty")
            out.append({"role": role, "content": value})
    if cfg.system_prompt and out[0]["role"] != "system":
        out.insert(0, {"role": "system", "content": cfg.system_prompt})
    if not any(m["role"] == "assistant" for m in out):
        raise BadRow("no_assistant", "no assistant turn")
    return out


def render(messages: list[dict], tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """The conversation's text and the character spans the assistant turns add to it.

    A turn's span is what rendering the conversation up to and including it adds to the
    rendering up to it with the generation prompt (the "assistant" header), without the
    template's trailing whitespace (the separator before the next turn)."""
    def text(turns, prompt=False) -> str:
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=prompt)

    full = text(messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before, through = text(messages[:i], prompt=True) if i else "", text(messages[: i + 1])
        if not (full.startswith(through) and through.startswith(before)):
            raise BadRow("template", f"the chat template renders turn {i + 1} differently once later turns follow")
        spans.append((len(before), len(through.rstrip())))
    return full, spans


def encode(rows: list[dict], tokenizer, cfg, source: str, field: str) -> ChatDataset:
    """Rows -> padded ids with the assistant-token mask; bad rows skipped (counted, warned) or an error (data.bad_rows)."""
    found = [c for c in (cfg.messages_column, cfg.prompt_column, cfg.completion_column) if c in rows[0]]
    if not found:
        raise KDForgeError(f"{field}: {source} has neither a {cfg.messages_column!r} column (data.messages_column) nor "
                           f"{cfg.prompt_column!r} + {cfg.completion_column!r} (data.prompt_column / data.completion_column); "
                           f"columns: {', '.join(map(str, rows[0]))}")
    bad: dict[str, list[int]] = {}
    texts, spans, kept = [], [], []

    def reject(i: int, e: BadRow) -> None:
        if cfg.bad_rows == "error":
            raise KDForgeError(f"{field}: {source} data row {i + 1}: {e.detail} ({e.kind}: {BAD_KINDS[e.kind]}); "
                               "fix the row, or set data.bad_rows: skip to count and skip such rows")
        bad.setdefault(e.kind, []).append(i)

    for i, row in enumerate(rows):
        try:
            full, sp = render(row_messages(row, cfg), tokenizer)
        except BadRow as e:
            reject(i, e)
            continue
        texts.append(full)
        spans.append(sp)
        kept.append(i)
    ids, masks, nbytes = [], [], []
    if texts:
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)  # the template holds the specials
        for i, full, row_ids, offsets, sp in zip(kept, texts, enc["input_ids"], enc["offset_mapping"], spans):
            if len(row_ids) > cfg.max_length:
                reject(i, BadRow("too_long", f"{len(row_ids)} tokens after the chat template, over data.max_length={cfg.max_length}"))
                continue
            start = np.array([s for s, _ in offsets])  # a token is the assistant's when it starts inside a span
            ids.append(row_ids)
            masks.append(np.any([(start >= a) & (start < b) for a, b in sp], axis=0))
            nbytes.append(token_bytes(offsets, char_to_byte(full)))
    skipped = {kind: len(r) for kind, r in sorted(bad.items())}
    if bad:
        parts = [f"{len(r)} {kind} (data rows {', '.join(str(j + 1) for j in r[:3])}{', ...' if len(r) > 3 else ''}: "
                 f"{BAD_KINDS[kind]})" for kind, r in sorted(bad.items())]
        warnings.warn(f"{field}: skipped {sum(skipped.values())} of {len(rows)} rows of {source}: {'; '.join(parts)}", stacklevel=2)
    if not ids:
        raise KDForgeError(f"{field}: no usable row in {source} (every row was skipped: {skipped})")
    n, length = len(ids), cfg.max_length
    out_ids = torch.full((n, length), tokenizer.pad_token_id, dtype=torch.long)
    loss_mask, attention, out_bytes = (torch.zeros(n, length, dtype=torch.long) for _ in range(3))
    for r, (row_ids, m, nb) in enumerate(zip(ids, masks, nbytes)):
        out_ids[r, : len(row_ids)] = torch.tensor(row_ids)
        loss_mask[r, : len(row_ids)] = torch.from_numpy(m.astype(np.int64))
        attention[r, : len(row_ids)] = 1
        out_bytes[r, : len(row_ids)] = torch.from_numpy(nb)
    return ChatDataset(out_ids, loss_mask, attention, skipped, out_bytes)


def chat_tokenizer(cfg):
    if not cfg.tokenizer:
        raise KDForgeError("data.tokenizer: the chat dataset needs a tokenizer with a chat template (a model folder or alias, e.g. smollm2-135m)")
    tok = load_tokenizer(cfg.tokenizer, field="data.tokenizer")
    if not getattr(tok, "chat_template", None):
        raise KDForgeError(f"data.tokenizer: {cfg.tokenizer} has no chat template (tokenizer_config.json chat_template); "
                           "use an instruction-tuned model's tokenizer, or name: text-lm for plain text")
    return tok


@DATASETS.register("chat")
def chat(cfg, seed: int) -> DataBundle:
    """Train (data.path), val (data.val_path, else a seeded val_fraction of train) and test
    (data.test_path, else a datasets folder's "test" split, else a seeded test_fraction of train)."""
    if not cfg.path:
        raise KDForgeError("data.path: the chat dataset needs a .jsonl / .parquet file or a `datasets` folder")
    tok = chat_tokenizer(cfg)
    splits = read_splits(cfg.path)
    train = encode(splits["train"], tok, cfg, str(cfg.path), "data.path")
    order = np.random.default_rng(seed).permutation(len(train))
    parts = {}
    for name, field in (("test", "test_path"), ("val", "val_path")):
        path = getattr(cfg, field)
        if path or (name == "test" and "test" in splits):
            rows = read_rows(path, f"data.{field}") if path else splits["test"]
            parts[name] = encode(rows, tok, cfg, str(path or cfg.path), f"data.{field}" if path else "data.path")
            continue
        n = max(1, int(len(train) * getattr(cfg, f"{name}_fraction")))
        parts[name], order = train.subset(order[:n]), order[n:]
    if len(order) < 1:
        raise KDForgeError(f"data.path: {cfg.path} has {len(train)} usable rows, too few to split into train/val/test")
    rest = train.subset(order[: cfg.train_limit])
    rest.skipped = train.skipped
    test = parts["test"] if cfg.test_limit is None else parts["test"].subset(np.arange(min(cfg.test_limit, len(parts["test"]))))
    return DataBundle(rest, parts["val"], test, input_shape=(cfg.max_length,), num_classes=len(tok))


def skipped_rows(data: DataBundle) -> dict[str, dict[str, int]]:
    """{split: {bad-row kind: count}} for the splits that skipped rows (recorded in a run's metrics)."""
    out = {}
    for name in ("train", "val", "test"):
        skipped = getattr(getattr(data, name), "skipped", None)
        if skipped:
            out[name] = skipped
    return out


__all__ = ["BAD_KINDS", "ChatDataset", "chat", "encode", "render", "row_messages", "skipped_rows"]
