#!/usr/bin/env python3
"""plot_run.py: PNG plots of a train_clip run from its log.jsonl (needs matplotlib).

  python3 scripts/plot_run.py runs/vit_b_16            # writes runs/vit_b_16/plots/*.png

- loss_rms.png: the paper's figure: training loss with spike events marked, above the optimizer RMS
  of the watched tensors (patch embedding first); spikes should follow RMS jumps by 1-8 steps.
- lr.png, throughput.png: learning rate and images/s per step.
- eval.png: evaluation metrics, when the run logged any (records with "eval").
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_log(path):
    steps, events, evals = [], [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                print(f"{path}:{n}: skipping a line that is not JSON (a run killed mid-write?)", file=sys.stderr)
                continue
            if rec.get("event") == "spike":
                events.append(rec)
            elif "eval" in rec:
                evals.append(rec)
            elif "loss" in rec:
                steps.append(rec)
    return steps, events, evals


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    run_dir = sys.argv[1]
    steps, events, evals = read_log(os.path.join(run_dir, "log.jsonl"))
    if not steps:
        sys.exit(f"{run_dir}/log.jsonl has no step records")
    out = os.path.join(run_dir, "plots")
    os.makedirs(out, exist_ok=True)
    x = [r["step"] for r in steps]

    fig, (ax_loss, ax_rms) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    ax_loss.plot(x, [r["loss"] for r in steps], lw=0.8, label="loss")
    if events:
        ax_loss.scatter([e["step"] for e in events], [e["loss"] for e in events], color="red", zorder=3, label="spike")
    ax_loss.set_ylabel("training loss")
    ax_loss.legend(loc="upper right")
    names = list(steps[-1].get("rms", {}).keys())
    for i, name in enumerate(names):
        ax_rms.plot(x, [r.get("rms", {}).get(name, float("nan")) for r in steps], lw=1.2 if i == 0 else 0.6,
                    label=name, alpha=1.0 if i == 0 else 0.6)
    for e in events:
        ax_rms.axvline(e["step"], color="red", lw=0.5, alpha=0.5)
    ax_rms.axhline(1.0, color="gray", ls="--", lw=0.5)
    ax_rms.set_ylabel("RMS = sqrt(mean(g^2/u))")
    ax_rms.set_xlabel("step")
    ax_rms.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss_rms.png"), dpi=120)

    for key, fname, label in (("lr", "lr.png", "learning rate"), ("img_per_s", "throughput.png", "images/s")):
        fig, ax = plt.subplots(figsize=(9, 3.5))
        ax.plot(x, [r.get(key, float("nan")) for r in steps], lw=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        fig.tight_layout()
        fig.savefig(os.path.join(out, fname), dpi=110)

    if evals:
        metrics = sorted({k for e in evals for k, v in e.items() if isinstance(v, (int, float)) and k not in ("step", "eval")})
        fig, ax = plt.subplots(figsize=(9, 4))
        for m in metrics:
            ax.plot([e["step"] for e in evals], [e.get(m, float("nan")) for e in evals], marker="o", label=m)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "eval.png"), dpi=110)
    print(f"wrote plots to {out}/ ({len(steps)} steps, {len(events)} spikes, {len(evals)} evals)")


if __name__ == "__main__":
    main()
