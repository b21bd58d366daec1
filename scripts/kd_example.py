"""Knowledge distillation on a release's teacher top-k logprobs: a few CPU training steps of a small student.

Reads a release folder written by `distill export --with-logprobs`; writes nothing. Prints the loss per
step: cross-entropy on the teacher's tokens plus forward KL(teacher || student) on the teacher's top-k
distribution, renormalised over the k tokens it returned.

The student is a tiny GRU language model over the teacher's own token vocabulary, numbered from the
release (`pipeline.kd.teacher_vocab`), because no Hugging Face student with the GGUF teacher's tokenizer
is available offline here. With a real student, pass its tokenizer to `load_soft_targets` instead: the
loader refuses one whose vocabulary lacks the teacher's tokens.

    python scripts/kd_example.py RELEASE [--steps 30] [--alpha 0.5]
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("release")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the KL term (1 - alpha: cross-entropy)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from pipeline.errors import DatasetError
    from pipeline.kd import load_soft_targets, teacher_vocab

    try:
        vocab = teacher_vocab(args.release)
        targets = load_soft_targets(args.release, vocab)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    if not targets:
        print(f"error: {args.release}: no answer has teacher logprobs", file=sys.stderr)
        return 3
    torch.manual_seed(args.seed)
    n_vocab, bos = len(vocab), len(vocab)
    emb, rnn, head = torch.nn.Embedding(n_vocab + 1, 64), torch.nn.GRU(64, 128, batch_first=True), torch.nn.Linear(128, n_vocab)
    params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    print(f"student: GRU over the teacher's {n_vocab:,} tokens; {len(targets)} answers, "
          f"{sum(len(t.ids) for t in targets):,} tokens, top-{targets[0].top_ids.shape[1]} soft targets")
    first = last = None
    for step in range(args.steps):
        total = torch.zeros(())
        for t in targets:
            ids = torch.from_numpy(t.ids)
            inputs = torch.cat([torch.tensor([bos]), ids[:-1]]).unsqueeze(0)
            logq = torch.log_softmax(head(rnn(emb(inputs))[0])[0], dim=-1)          # [T, V]
            ce = torch.nn.functional.nll_loss(logq, ids)
            top = torch.from_numpy(t.top_ids).clamp(min=0)
            lp = torch.from_numpy(t.top_logprobs)
            p = torch.softmax(lp, dim=-1)                                          # renormalised over the top k
            kl = (p * (torch.log_softmax(lp, dim=-1) - logq.gather(1, top))).nan_to_num().sum(-1).mean()
            total = total + (1 - args.alpha) * ce + args.alpha * kl
        loss = total / len(targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
        print(f"step {step + 1:3d}  loss {last:.4f}")
    print(f"loss {first:.4f} -> {last:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
