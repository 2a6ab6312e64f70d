"""The dataset card (``README.md``) of a published folder: hub front matter, how the data was
made (from the lineage), the funnel, lengths, columns, samples, how to load it, limitations."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import yaml

from distill.log import pct
from distill.publish.lengths import describe, lengths
from distill.publish.lineage import Input, funnel
from distill.publish.splits import problem_of


def size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
                         (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")):
        if n < bound:
            return label
    return "n>1T" if n > 10 ** 12 else "1B<n<10B"


KIND_TAGS = {"cot": "chain-of-thought", "pot": "program-of-thought",
             "instruction": "instruction-tuning"}
LOAD_HINTS = {
    "messages": "The `messages` column is a chat (prompt turns + the teacher's answer), the "
                "conversational format TRL's `SFTTrainer` takes as it is.",
    "prompt-completion": "`prompt` (chat turns) and `completion` (the assistant turn) are TRL's "
                         "conversational prompt-completion format: `SFTTrainer` trains on the "
                         "completion only.",
    "alpaca": "Alpaca columns (`instruction`, `input`, `output`, plus `system` and `history` "
              "for the system prompt and few-shot turns), as LLaMA-Factory's `alpaca` "
              "formatting reads them.",
    "sharegpt": "`conversations` holds `{from, value}` turns (`system`, `human`, `gpt`), as "
                "LLaMA-Factory's and Axolotl's `sharegpt` formats read them.",
}


def render_card(src: Input, split_rows: dict[str, list[dict]], table: pa.Table,
                by_split: dict[str, list[int]], manifest: dict, *, license: str,
                language: list[str], name: str | None, samples: int, repo_id: str | None,
                out: Path, has_funnel: bool) -> str:
    gen = src.generate
    prompt = gen.get("prompt") or {}
    rows = [r for rs in split_rows.values() for r in rs]
    kind = prompt.get("kind") or (rows[0].get("kind") if rows else None)
    title = name or (repo_id.split("/")[-1] if repo_id else out.resolve().name)
    front = {
        "license": license, "language": language,
        "task_categories": ["text-generation"] + (["question-answering"]
                                                  if kind in ("cot", "pot") else []),
        "tags": ["synthetic", "distillation", "distill"] + ([KIND_TAGS[kind]]
                                                             if kind in KIND_TAGS else []),
        "size_categories": [size_category(len(rows))], "pretty_name": title,
        "configs": [{"config_name": "default", "data_files": [
            {"split": s, "path": f"data/{s}-*.parquet"} for s in by_split]}],
    }
    model = gen.get("model") or _first(rows, "model") or "an unrecorded teacher"
    problems = len({problem_of(r) for r in rows})
    split_text = ", ".join(f"{s}: {len(v)}" for s, v in by_split.items())
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {title}", "",
             f"{len(rows)} synthetic {KIND_TAGS.get(kind, kind or 'text')} samples for "
             f"{problems} problems ({split_text}), written by the teacher model `{model}` "
             f"with the prompt file `{prompt.get('name') or _first(rows, 'template') or '?'}`"
             + (", then filtered" if src.filters else "") + ". Made with distill (`distill "
             "generate`" + (", `distill filter`" if src.filters else "") + ", `distill "
             "publish`).", ""]
    lines += _how_made(src, manifest)
    lines += _funnel_section(src, has_funnel)
    lines += _lengths_section(split_rows)
    lines += _columns_section(table, manifest)
    lines += _samples_section(split_rows, samples)
    where = repo_id or str(out)
    first = next(iter(by_split))
    lines += ["## How to load", "", "```python", "from datasets import load_dataset", "",
              f"ds = load_dataset({where!r})",
              f"print(ds)  # splits: {', '.join(by_split)}", f"print(ds[{first!r}][0])", "```",
              "", LOAD_HINTS[manifest["format"]], ""]
    lines += _limitations(src, rows, by_split, license)
    return "\n".join(lines).rstrip() + "\n"


def _first(rows: list[dict], column: str):
    return next((r[column] for r in rows if r.get(column)), None)


def _how_made(src: Input, manifest: dict) -> list[str]:
    gen = src.generate
    prompt, source = gen.get("prompt") or {}, gen.get("source") or {}
    lines = ["## How it was made", ""]
    if gen:
        lines.append(f"- **Teacher:** `{gen.get('model', '?')}`"
                     + (f" (backend `{gen['backend']}`)" if gen.get("backend") else ""))
        if prompt:
            sha = (prompt.get("sha256") or "")[:12]
            lines.append(f"- **Prompt file:** `{prompt.get('name', '?')}` (kind "
                         f"`{prompt.get('kind', '?')}`"
                         + (f", answer format `{prompt['answer_format']}`"
                            if prompt.get("answer_format") else "")
                         + (f", sha256 `{sha}…`" if sha else "") + ")"
                         + (f", from `{prompt['path']}`" if prompt.get("path") else ""))
        if gen.get("sampling"):
            s = ", ".join(f"{k}={v}" for k, v in gen["sampling"].items() if v not in ([], None))
            lines.append(f"- **Sampling:** {s}")
        if source:
            mapping = ", ".join(f"{k}={v}" for k, v in (source.get("fields") or {}).items())
            lines.append(f"- **Source:** `{source.get('path', '?')}`"
                         + (f" (fields: {mapping})" if mapping else ""))
        if gen.get("rows") is not None or gen.get("rows_planned") is not None:
            lines.append(f"- **Generated:** {gen.get('rows', gen.get('rows_planned'))} rows"
                         + (f", finished {gen['finished']}" if gen.get("finished") else ""))
    else:
        lines.append("- The input carries no generate manifest: teacher, prompt and sampling "
                     "are unrecorded.")
    for f in src.filters:
        stages = " → ".join(_stage_text(s) for s in f.get("stages") or []) or "none"
        stages_ = f.get("stages") or [{}]
        lines.append(f"- **Filtered** ({f.get('created', '?')}): {stages_[0].get('seen', '?')} "
                     f"rows in, {f.get('rows', stages_[-1].get('kept', '?'))} kept; stages: "
                     f"{stages}")
    lines.append(f"- **Published** ({manifest['created']}): format `{manifest['format']}`, "
                 + (f"split by problem (`source_id`), test size {manifest['test_size']}, "
                    f"seed {manifest['seed']}" if manifest["split_by"] == "source_id" and
                    manifest["test_size"] else
                    f"split by the column `{manifest['split_by']}`" if manifest["split_by"]
                    else "one split"))
    steps = [f"publish of `{manifest['input']}`"] + [_step(m) for m in src.chain]
    lines += [(f"- **Lineage:** {' ← '.join(steps)}. The whole chain of manifests is in "
              "`manifest.json`."), ""]
    lines += _versions_table([manifest] + src.chain)
    return lines


def _step(m: dict) -> str:
    if m.get("kind") == "generate":
        return f"generate from `{(m.get('source') or {}).get('path', '?')}`"
    return f"{m.get('kind', '?')}" + (f" of `{m['input']}`" if m.get("input") else "")


def _stage_text(stage: dict) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in (stage.get("options") or {}).items())
    return f"`{stage.get('stage', '?')}`" + (f" ({opts})" if opts else "")


def _versions_table(chain: list[dict]) -> list[str]:
    steps = [(m.get("kind", "?"), m.get("versions") or {}) for m in reversed(chain)]
    steps = [(k, v) for k, v in steps if v]
    if not steps:
        return []
    names = list(dict.fromkeys(n for _, v in steps for n in v))
    lines = ["Package versions at each step:", "",
             "| package | " + " | ".join(k for k, _ in steps) + " |",
             "|---|" + "---|" * len(steps)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(str(v.get(n, "-")) for _, v in steps) + " |")
    return lines + [""]


def _funnel_section(src: Input, has_funnel: bool) -> list[str]:
    fun = funnel(src.chain)
    if not fun:
        return ["## Filter funnel", "", "This dataset was not filtered by `distill filter`.", ""]
    lines = ["## Filter funnel", "", (f"{fun['rows_in']} generated rows in, "
             f"**{fun['kept']} kept** ({pct(fun['kept'], fun['rows_in'])})."), ""]
    if has_funnel:
        lines += ["![filter funnel](funnel.png)", ""]
    lines += ["| stage | seen | kept | dropped | top drop reasons |", "|---|---:|---:|---:|---|"]
    for s in fun["stages"]:
        reasons = "; ".join(f"{r} ({c})" for r, c in list((s.get("reasons") or {}).items())[:3])
        lines.append(f"| {s['stage']} | {s['seen']} | {s['kept']} | {s['dropped']} | "
                     f"{_cell(reasons) or '-'} |")
    return lines + [""]


def _lengths_section(split_rows: dict[str, list[dict]]) -> list[str]:
    lines = ["## Length distributions", "", "![length histograms](lengths.png)", "",
             "| split | metric | min | median | mean | p90 | max |", "|---|---|---:|---:|---:|---:|---:|"]
    for split, rs in split_rows.items():
        for metric, values in lengths(rs).items():
            d = describe(values)
            lines.append(f"| {split} | {metric} | {d['min']} | {d['median']} | {d['mean']} | "
                         f"{d['p90']} | {d['max']} |")
    return lines + [""]


def _columns_section(table: pa.Table, manifest: dict) -> list[str]:
    lines = ["## Splits and columns", ""]
    if manifest["split_by"] == "source_id":
        lines += [("The test split holds whole problems: every sample of a problem (`source_id`) "
                  "is in the same split."), ""]
    elif manifest["split_by"]:
        lines += [f"Splits follow the column `{manifest['split_by']}` of the source rows.", ""]
    lines += ["| column | type |", "|---|---|"]
    lines += [f"| `{f.name}` | `{f.type}` |" for f in table.schema]
    return lines + [""]


def _samples_section(split_rows: dict[str, list[dict]], k: int) -> list[str]:
    rows = next(iter(split_rows.values()))
    picked, seen = [], set()
    for r in rows:  # one sample per problem first
        if problem_of(r) not in seen and len(picked) < k:
            seen.add(problem_of(r))
            picked.append(r)
    if not picked:
        return []
    lines = ["## Samples", ""]
    for r in picked:
        user = next((m["content"] for m in reversed(r.get("messages") or [])
                     if m["role"] == "user"), r.get("question") or "")
        facts = ", ".join(f"{c} `{r[c]}`" for c in ("gold", "answer", "correct") if r.get(c)
                          is not None)
        lines += [f"### `{r.get('id')}`" + (f" ({facts})" if facts else ""), "", "Prompt:", "",
                  *_fence(_clip(user)), "", "Completion:", "", *_fence(_clip(r.get("completion")
                                                                          or "")), ""]
    return lines


def _limitations(src: Input, rows: list[dict], by_split: dict, license: str) -> list[str]:
    stages = {s.get("stage"): s for f in src.filters for s in f.get("stages") or []}
    model = src.generate.get("model") or _first(rows, "model") or "the teacher"
    items = [(f"Every completion was written by a language model (`{model}`): it can be wrong or "
             "unhelpful, and it carries the teacher's biases and style.")]
    if "verify" in stages:
        items.append("Final answers were checked against gold answers (`verify`); the reasoning "
                     "was not: a right answer can follow flawed steps.")
    elif "execute" in stages:
        items.append("Programs were run and their output kept as the answer (`execute`); "
                     "correctness was checked only where a gold answer existed.")
    else:
        items.append("No stage checked correctness: answers were not compared with gold answers.")
    if "decontaminate" in stages:
        opts = stages["decontaminate"].get("options") or {}
        items.append(f"Decontaminated against {opts.get('against', 'the configured sets')} "
                     "by n-gram overlap; paraphrased benchmark items can remain.")
    else:
        items.append("Not decontaminated: benchmark problems may be in the data.")
    per_problem = max((sum(1 for r in rows if problem_of(r) == p)
                       for p in {problem_of(r) for r in rows}), default=0)
    if per_problem > 1:
        items.append(f"Up to {per_problem} completions per problem: rows are not independent.")
    truncated = sum(1 for r in rows if r.get("finish_reason") == "length")
    if truncated:
        items.append(f"{truncated} rows stopped at the token limit (finish_reason `length`).")
    if len(by_split) == 1:
        items.append("There is no held-out split (use `--test-size` to make one).")
    items.append(f"License field: `{license}`. The teacher's terms of use and the sources' "
                 "licenses also apply to this data; check them before you use or share it.")
    return ["## Known limitations", ""] + [f"- {i}" for i in items] + [""]


def _fence(text: str) -> list[str]:
    ticks = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, ticks + 1)
    return [fence, text, fence]


def _clip(text: str, n: int = 1500) -> str:
    text = str(text)
    return text if len(text) <= n else text[:n] + f"\n… ({len(text) - n} more characters)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
