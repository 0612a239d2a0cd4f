"""Tiny randomly initialised HF models saved to local folders (fast, offline). Import the fixtures:
`from tests.hf_tiny import tiny_bert_dir, tiny_llama_dir`."""
import pytest


def _save_tokenizer(folder, vocab_size=100):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "</s>": 4}
    for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz .,!?'\n:ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"):
        if len(vocab) < vocab_size:
            vocab[ch] = len(vocab)
    while len(vocab) < vocab_size:
        vocab[f"<x{len(vocab)}>"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="</s>")
    fast.save_pretrained(folder)
    return fast


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertForSequenceClassification

    d = tmp_path_factory.mktemp("tiny_bert")
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=3, pad_token_id=0)
    BertForSequenceClassification(cfg).save_pretrained(d)
    _save_tokenizer(d)
    return d


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("tiny_llama")
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      pad_token_id=0, eos_token_id=4, bos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(d)
    _save_tokenizer(d)
    return d


def tiny_bert_classifier(num_hidden_layers: int = 1):
    """An in-memory, randomly initialised BertForSequenceClassification (vocab 50, width 32, 3 labels), seed 0."""
    import torch
    import transformers

    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=num_hidden_layers, num_attention_heads=4,
                                  intermediate_size=64, num_labels=3)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(cfg).eval()


# A ChatML-like template: each turn is "<role>: <content></s>\n"; the generation prompt is "assistant: ".
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")


@pytest.fixture(scope="session")
def tiny_chat_llama_dir(tmp_path_factory):
    """A tiny Llama (4 heads in 2 KV groups, 3 layers) whose tokenizer has a chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("tiny_chat_llama")
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=0, eos_token_id=4, bos_token_id=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(d)
    fast = _save_tokenizer(d)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(d)
    return d
