"""Chat data (`data.name: chat`): only assistant tokens are scored, padding is invisible to real tokens,
every bad row kind is named, and JSONL / Parquet / datasets folders read alike."""
import json
import re
import shutil

import pytest
import torch

from kdforge.config import DataConfig
from kdforge.data import load_data
from kdforge.errors import KDForgeError
from kdforge.models.hf import load_hf, load_tokenizer
from tests.hf_tiny import tiny_chat_llama_dir  # noqa: F401  (fixture)

CONVERSATION = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is two plus two?"},
                {"role": "assistant", "content": "four."}, {"role": "user", "content": "and three?"},
                {"role": "assistant", "content": "five, no: six!"}]


def _text(tok, ids) -> str:
    return "".join(tok.convert_ids_to_tokens(ids.tolist()))  # the tiny tokenizer is per character


def _rows(n=30):
    return [{"messages": [{"role": "user", "content": f"question {i}?"}, {"role": "assistant", "content": f"answer {i}."}]}
            for i in range(n)]


def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _cfg(path, folder, **kw):
    return DataConfig(name="chat", path=str(path), tokenizer=str(folder), max_length=kw.pop("max_length", 128),
                      val_fraction=0.1, test_fraction=0.1, **kw)


def test_only_assistant_tokens_carry_loss_with_a_system_turn(tmp_path, tiny_chat_llama_dir):  # noqa: F811
    path = _jsonl(tmp_path / "c.jsonl", [{"messages": CONVERSATION}] * 20)
    data = load_data(_cfg(path, tiny_chat_llama_dir), 0)
    tok = load_tokenizer(str(tiny_chat_llama_dir))
    for split in (data.train, data.val, data.test):
        s = split[0]
        ids, mask, real = s["input_ids"], s["loss_mask"].bool(), s["attention_mask"].bool()
        assert _text(tok, ids[mask]) == "four.</s>five, no: six!</s>"  # both answers and their end-of-turn, nothing else
        prompt = _text(tok, ids[real & ~mask])
        assert prompt.startswith("system: be brief</s>") and "user: and three?</s>" in prompt and "four" not in prompt
        assert not (mask & ~real).any() and (ids[~real] == tok.pad_token_id).all()  # padding: never scored
        assert int(s["token_bytes"][mask].sum()) == len("four.</s>five, no: six!</s>")  # bits per byte: the answers' bytes


def test_prompt_completion_columns_and_system_prompt(tmp_path, tiny_chat_llama_dir):  # noqa: F811
    rows = [{"question": f"q{i}?", "answer": f"a {i}"} for i in range(20)]
    data = load_data(_cfg(_jsonl(tmp_path / "g.jsonl", rows), tiny_chat_llama_dir, prompt_column="question",
                          completion_column="answer", system_prompt="solve it"), 0)
    tok = load_tokenizer(str(tiny_chat_llama_dir))
    s = data.train[0]
    text = _text(tok, s["input_ids"][s["attention_mask"].bool()])
    assert text.startswith("system: solve it</s>\nuser: q") and _text(tok, s["input_ids"][s["loss_mask"].bool()]).startswith("a ")


def test_padding_never_changes_a_real_tokens_logits(tmp_path, tiny_chat_llama_dir):  # noqa: F811
    """Padded, not packed: a conversation's logits are the same alone and padded, so no sample sees another."""
    data = load_data(_cfg(_jsonl(tmp_path / "c.jsonl", [{"messages": CONVERSATION}] * 20), tiny_chat_llama_dir), 0)
    lm = load_hf(str(tiny_chat_llama_dir), "causal_lm").eval()
    s = data.train[0]
    n = int(s["attention_mask"].sum())
    assert n < len(s["input_ids"])  # there is padding to test
    with torch.no_grad():
        padded, alone = lm(s["input_ids"][None]), lm(s["input_ids"][None, :n])
    torch.testing.assert_close(padded[:, :n], alone, atol=1e-5, rtol=0)


BAD = {
    "malformed": {"messages": "hello"},
    "unknown_role": {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]},
    "empty_content": {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "ok"}]},
    "no_assistant": {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]},
    "too_long": {"messages": [{"role": "user", "content": "x" * 200}, {"role": "assistant", "content": "ok"}]},
}
MESSAGES = {"malformed": "not a list of turns", "unknown_role": "role 'robot'", "empty_content": "turn 1 (user) has empty content",
            "no_assistant": "no assistant turn", "too_long": "over data.max_length=128"}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_every_bad_row_kind_is_an_error_naming_its_row(tmp_path, tiny_chat_llama_dir, kind):  # noqa: F811
    rows = _rows(5) + [BAD[kind]] + _rows(5)
    if kind == "malformed":  # a mixed-type column would not load as one table: a file of messages that are strings
        rows = [{"messages": "hello"}] * 3
    path = _jsonl(tmp_path / "b.jsonl", rows)
    with pytest.raises(KDForgeError, match=f"data row {6 if kind != 'malformed' else 1}: .*{re.escape(MESSAGES[kind])}.*{kind}") as e:
        load_data(_cfg(path, tiny_chat_llama_dir, bad_rows="error"), 0)
    assert "data.bad_rows: skip" in str(e.value)


def test_bad_rows_skipped_are_counted_and_warned(tmp_path, tiny_chat_llama_dir):  # noqa: F811
    rows = _rows(30) + [BAD[k] for k in ("unknown_role", "empty_content", "no_assistant", "too_long", "too_long")]
    with pytest.warns(UserWarning, match=r"skipped 5 of 35 rows .*2 too_long \(data rows 34, 35"):
        data = load_data(_cfg(_jsonl(tmp_path / "b.jsonl", rows), tiny_chat_llama_dir), 0)
    assert data.train.skipped == {"empty_content": 1, "no_assistant": 1, "too_long": 2, "unknown_role": 1}
    assert len(data.train) + len(data.val) + len(data.test) == 30


def test_a_template_that_rewrites_earlier_turns_is_its_own_kind(tmp_path, tiny_chat_llama_dir):  # noqa: F811
    tok = load_tokenizer(str(tiny_chat_llama_dir))
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% if loop.last %}!{% endif %}{% endfor %}"
    folder = tmp_path / "tok"
    tok.save_pretrained(folder)
    shutil.copy(tiny_chat_llama_dir / "config.json", folder)  # a model folder holds a config
    with pytest.raises(KDForgeError, match="data row 1: .*renders turn 2 differently.*template"):
        load_data(_cfg(_jsonl(tmp_path / "c.jsonl", _rows(10)), folder, bad_rows="error"), 0)


def test_a_tokenizer_without_a_chat_template_and_missing_columns_are_errors(tmp_path, tiny_chat_llama_dir):  # noqa: F811
    tok = load_tokenizer(str(tiny_chat_llama_dir))
    tok.chat_template = None
    tok.save_pretrained(tmp_path / "plain")
    shutil.copy(tiny_chat_llama_dir / "config.json", tmp_path / "plain")
    path = _jsonl(tmp_path / "c.jsonl", _rows(10))
    with pytest.raises(KDForgeError, match="has no chat template"):
        load_data(_cfg(path, tmp_path / "plain"), 0)
    with pytest.raises(KDForgeError, match="neither a 'turns' column .*columns: messages"):
        load_data(_cfg(path, tiny_chat_llama_dir, messages_column="turns"), 0)


def test_parquet_and_datasets_folder_read_like_jsonl(tmp_path, tiny_chat_llama_dir):  # noqa: F811
    datasets = pytest.importorskip("datasets")
    rows = _rows(30)
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "c.parquet"))
    datasets.DatasetDict({"train": ds, "test": datasets.Dataset.from_list(_rows(4))}).save_to_disk(str(tmp_path / "folder"))
    ref = load_data(_cfg(_jsonl(tmp_path / "c.jsonl", rows), tiny_chat_llama_dir), 0)
    par = load_data(_cfg(tmp_path / "c.parquet", tiny_chat_llama_dir), 0)
    assert torch.equal(ref.train.ids, par.train.ids) and torch.equal(ref.train.loss_mask, par.train.loss_mask)
    folder = load_data(_cfg(tmp_path / "folder", tiny_chat_llama_dir), 0)
    assert len(folder.test) == 4  # the folder's own test split
    with pytest.raises(KDForgeError, match="not a `datasets` folder"):
        load_data(_cfg(tmp_path, tiny_chat_llama_dir), 0)


def test_text_lm_reads_a_text_column_of_jsonl(tmp_path, tiny_chat_llama_dir):  # noqa: F811
    path = _jsonl(tmp_path / "t.jsonl", [{"body": f"document number {i} is here."} for i in range(40)])
    cfg = DataConfig(name="text-lm", path=str(path), text_column="body", tokenizer=str(tiny_chat_llama_dir), max_length=32)
    data = load_data(cfg, 0)
    tok = load_tokenizer(str(tiny_chat_llama_dir))
    assert _text(tok, data.train[0]["input_ids"]).startswith("document number 0 is here.</s>docum")
    with pytest.raises(KDForgeError, match="'text' is not a column"):
        load_data(cfg.model_copy(update={"text_column": "text"}), 0)
