"""The prompt/completion export trains as it is: 3 steps of TRL's SFTTrainer with completion-only loss on CPU.

A tiny random Llama and a word-level tokenizer trained on the release's own text (no downloads), a chat template
without generation markers (the case `assistant_only_loss` fails on), and the collated batch checked token by
token: labels are -100 on every prompt token and the token ids on every completion token.
"""

from __future__ import annotations

import math

import pytest

from pipeline.records import new_row
from pipeline.stages.export.config import ExportConfig
from pipeline.stages.export.stage import run_export
from pipeline.store import DatasetWriter

pytest.importorskip("trl")  # the test extra (pyproject.toml)

# A template with no {% generation %} markers, as SmolLM2's has none.
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
            "{% if add_generation_prompt %}<|assistant|> {% endif %}")
SPECIALS = ["[PAD]", "[UNK]", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


def make_pool(path, n=24):
    rows = []
    for i in range(n):
        words = " ".join(f"w{(i * 7 + k) % 31}" for k in range(3 + i % 5))
        rows.append(new_row(f"Question {i}: explain {words}", "", f"Answer {i} says {words} because {i % 4}",
                            origin="orca", score=float(n - i), teacher_model="tiny-teacher", teacher_backend="fake",
                            system="Be brief." if i % 3 == 0 else None,
                            reasoning=f"think {i} about {words}" if i % 2 == 0 else None))
    for r in rows:  # new_row builds messages without the system turn; the Orca stage writes it in
        if r["system"]:
            r["messages"] = [{"role": "system", "content": r["system"]}] + r["messages"]
    w = DatasetWriter(path, "select")
    w.write_shard(0, rows)
    w.write_manifest(input=None)
    return rows


def tokenizer_for(texts):
    """A word-level tokenizer whose vocabulary is the words of `texts` (the release's own), specials first."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts for w in t.split()} - set(SPECIALS))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(SPECIALS + words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="<|end|>")
    fast.chat_template = TEMPLATE
    return fast


@pytest.mark.slow
def test_sft_trainer_trains_on_the_prompt_completion_export_with_the_prompt_masked(tmp_path, monkeypatch):
    for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                 "TOKENIZERS_PARALLELISM": "false"}.items():
        monkeypatch.setenv(k, v)
    import datasets
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    make_pool(tmp_path / "sel")
    m = run_export(tmp_path / "sel", tmp_path / "rel", ExportConfig(format="prompt_completion", reasoning="think_tags"),
                   progress=False)
    assert m["format"] == "prompt_completion" and m["columns"][:2] == ["prompt", "completion"]
    ds = datasets.load_dataset(str(tmp_path / "rel"), split="train")
    assert "messages" not in ds.column_names and "reasoning" not in ds.column_names
    assert any(ex["completion"][0]["content"].startswith("<think>\n") for ex in ds)

    texts = [msg["content"] for ex in ds for msg in ex["prompt"] + ex["completion"]]
    tok = tokenizer_for(texts)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                                         eos_token_id=tok.eos_token_id, bos_token_id=None))
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=4,
                     learning_rate=1e-3, completion_only_loss=True, report_to="none", logging_steps=1,
                     save_strategy="no", use_cpu=True, dataloader_num_workers=0, max_length=128,
                     dataset_num_proc=None, disable_tqdm=True, seed=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)

    # The collated batch: prompt tokens carry no loss, completion tokens do.
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert batch["labels"].shape == batch["input_ids"].shape
    for row, (ids, labels) in enumerate(zip(batch["input_ids"].tolist(), batch["labels"].tolist())):
        ex = ds[row]
        n_prompt = len(tok.apply_chat_template(ex["prompt"], add_generation_prompt=True, tokenize=True))
        n_all = len(tok.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=True))
        assert all(lab == -100 for lab in labels[:n_prompt])  # system and user turns, up to `<|assistant|>`
        assert labels[n_prompt:n_all] == ids[n_prompt:n_all]  # the answer (with its <think> trace) and <|end|>
        assert all(lab == -100 for lab in labels[n_all:])  # padding
        prompt_words = " ".join(f"<|{t['role']}|> {t['content']} <|end|>" for t in ex["prompt"]).split()
        assert tok.convert_ids_to_tokens(ids[:n_prompt]) == prompt_words + ["<|assistant|>"]
        assert tok.convert_ids_to_tokens(ids[n_prompt:n_all]) == ex["completion"][0]["content"].split() + ["<|end|>"]

    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 3 and len(losses) == 3
    assert all(math.isfinite(x) and x > 0 for x in losses) and math.isfinite(result.training_loss)
