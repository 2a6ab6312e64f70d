"""Peak memory and time of the chunked KD loss against the naive full-logits formula.

Both compute ``sum_t w_t * (alpha * T^2 * KL(p_T || q_T) + (1 - alpha) * CE_t) / N`` and its
backward, from the student's hidden states and LM head and the teacher's hidden states and
head. The naive baseline makes the full (N, V) student and teacher logits, log-softmaxes them,
and lets autograd do the rest; ours is ``distill.sft.kd.losses.kd_loss`` (chunks of
``--chunk-size`` tokens). Each variant runs in a fresh process, ``--rounds`` times, the
variants alternating (so a busy spell on a shared machine hits them alike); the inputs are
made from one seed, so all see the same numbers.

Memory is the process's peak resident set during the runs above its resident set just
before them (Linux: the peak is reset through /proc/self/clear_refs, read from VmHWM). It
counts every page torch touches, the gradients it returns included (the head's gradient,
V x H floats, is in both). Time is the best of ``--repeats`` runs per process over all rounds
(forward + backward).

    .venv/bin/python bench/kd_loss.py                      # V = 151,936, 2,048 tokens
    .venv/bin/python bench/kd_loss.py --chunk-size 128 256 512 1024
    .venv/bin/python bench/kd_loss.py --loss uld --vocab 49152 --teacher-vocab 151936

``--loss uld`` times the cross-tokenizer loss instead (naive: full softmaxes of both, sorted,
zero-padded, L1), with the teacher's own vocabulary (``--teacher-vocab``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_MEMORY, GOAL_TIME = 0.25, 1.2


def make_inputs(args):
    import torch

    g = torch.Generator().manual_seed(0)
    hs = torch.randn(args.tokens, args.hidden, generator=g).requires_grad_()
    ws = (2.0 / args.hidden ** 0.5 * torch.randn(args.vocab, args.hidden, generator=g))
    ht = torch.randn(args.tokens, args.teacher_hidden, generator=g)
    wt = 2.0 / args.teacher_hidden ** 0.5 * torch.randn(args.teacher_vocab or args.vocab,
                                                       args.teacher_hidden, generator=g)
    labels = torch.randint(0, args.vocab, (args.tokens,), generator=g)
    return hs, ws.requires_grad_(), ht, wt, labels


def naive(hs, ws, ht, wt, labels, t, alpha, loss="forward_kl"):
    import torch
    import torch.nn.functional as F

    logits = hs @ ws.T
    with torch.no_grad():
        log_p = (ht @ wt.T / t).log_softmax(-1)
    log_q = (logits / t).log_softmax(-1)
    if loss == "uld":
        q = log_q.exp().sort(-1, descending=True).values
        p = log_p.exp().sort(-1, descending=True).values
        width = max(q.shape[1], p.shape[1])
        q, p = F.pad(q, (0, width - q.shape[1])), F.pad(p, (0, width - p.shape[1]))
        kd = t * t * (q - p).abs().sum(-1)
    else:
        kd = t * t * F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)
    ce = F.cross_entropy(logits, labels, reduction="none")
    return (alpha * kd + (1 - alpha) * ce).mean()


def worker(args) -> None:
    import torch

    from distill.sft.kd.losses import DenseTeacher, kd_loss

    hs, ws, ht, wt, labels = make_inputs(args)
    if args.variant == "naive":
        def step():
            return naive(hs, ws, ht, wt, labels, args.kd_temperature, args.alpha, args.loss)
    else:
        def step():
            return kd_loss(hs, ws, DenseTeacher(ht, wt), labels, temperature=args.kd_temperature,
                           alpha=args.alpha, chunk_size=int(args.variant), loss=args.loss).loss
    base = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    times = []
    for _ in range(args.repeats):
        hs.grad = ws.grad = None
        start = time.perf_counter()
        loss = step()
        loss.backward()
        times.append(time.perf_counter() - start)
    peak = rss_kib("VmHWM") - base
    torch.save({"loss": loss.detach(), "hidden": hs.grad, "head": ws.grad}, args.out)
    print(json.dumps({"peak_mib": peak / 1024, "time": min(times), "times": times}))


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def run(variant: str, args, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--variant", variant, "--out", str(out)]
    for k in ("vocab", "tokens", "hidden", "teacher_hidden", "repeats", "kd_temperature", "alpha",
              "loss", "teacher_vocab"):
        if getattr(args, k) is not None:
            cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        sys.exit(f"{variant} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=151_936, help="V (Qwen2.5's padded vocabulary)")
    p.add_argument("--tokens", type=int, default=2048, help="N, positions in the batch")
    p.add_argument("--hidden", type=int, default=576, help="student hidden size (SmolLM2-135M)")
    p.add_argument("--teacher-hidden", type=int, default=960, help="teacher hidden size")
    p.add_argument("--chunk-size", type=int, nargs="+", default=[512],
                   help="tokens per chunk of ours; one row each")
    p.add_argument("--repeats", type=int, default=2, help="runs per process")
    p.add_argument("--rounds", type=int, default=2, help="processes per variant, alternating")
    p.add_argument("--kd-temperature", type=float, default=2.0)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--loss", default="forward_kl", choices=["forward_kl", "uld"])
    p.add_argument("--teacher-vocab", type=int, help="the teacher's vocabulary (uld; default V)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory(prefix="bench-kd-") as tmp:
        report(args, Path(tmp))


def report(args, tmp: Path) -> None:
    import torch

    print(f"loss={args.loss} V={args.vocab:,} V_teacher={args.teacher_vocab or args.vocab:,} "
          f"N={args.tokens:,} H_student={args.hidden} "
          f"H_teacher={args.teacher_hidden} T={args.kd_temperature} alpha={args.alpha} "
          f"threads={torch.get_num_threads()} repeats={args.repeats} rounds={args.rounds}")
    variants = ["naive"] + [str(c) for c in args.chunk_size]
    results = {}
    for _ in range(args.rounds):
        for v in variants:
            r = run(v, args, tmp / f"{v}.pt")
            results[v] = {"peak_mib": max(r["peak_mib"], results.get(v, r)["peak_mib"]),
                          "time": min(r["time"], results.get(v, r)["time"])}
    ref = torch.load(tmp / "naive.pt")
    print(f"{'variant':<14}{'peak MiB':>10}{'x naive':>9}{'time s':>9}{'x naive':>9}"
          f"{'|d loss|':>10}{'|d grad|':>10}{'rel':>9}  goals")
    for v in variants:
        r, got = results[v], torch.load(tmp / f"{v}.pt")
        mem = r["peak_mib"] / results["naive"]["peak_mib"]
        speed = r["time"] / results["naive"]["time"]
        d_loss = (got["loss"] - ref["loss"]).abs().item()
        d_grad = max((got[k] - ref[k]).abs().max().item() for k in ("hidden", "head"))
        rel = max(((got[k] - ref[k]).abs().max() / ref[k].abs().max()).item()
                  for k in ("hidden", "head"))
        ok = mem <= GOAL_MEMORY and speed <= GOAL_TIME and d_loss <= 1e-5 and rel <= 1e-5
        name = "naive" if v == "naive" else f"chunked {v}"
        print(f"{name:<14}{r['peak_mib']:>10.0f}{mem:>9.2f}{r['time']:>9.2f}{speed:>9.2f}"
              f"{d_loss:>10.1e}{d_grad:>10.1e}{rel:>9.1e}  "
              + ("baseline" if v == "naive" else "-" if args.loss == "uld"
                 else "pass" if ok else "FAIL"))
    if args.loss == "uld":
        print("uld: no goals (its sorts keep (chunk, V) ids); the gradient is a sign per rank, "
              "so ranks where q and p nearly tie differ by float32 noise")
        return
    print(f"goals: <= {GOAL_MEMORY} x naive peak memory, <= {GOAL_TIME} x naive time, "
          "loss within 1e-5, gradients within 1e-5 of their largest entry (rel)")


if __name__ == "__main__":
    main()
