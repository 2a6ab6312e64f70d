"""``distill show --html``: one self-contained page (inline CSS, JS and SVG charts, no
network) with the funnel, length histograms and a searchable, filterable sample of rows."""

from __future__ import annotations

import html
import json
import random
from pathlib import Path
from string import Template

from distill.folders import own_file
from distill.log import pct
from distill.publish.show import drop_reason, load_view, row_lengths, texts

TEXT_CLIP = 6000  # characters of a prompt or completion kept in the page


def write_html(path: str | Path, out_file: str | Path, max_rows: int = 1000,
               seed: int = 0, options: dict | None = None) -> Path:
    """Write the page for DIR to ``out_file``; at most ``max_rows`` rows are embedded (a
    sample that keeps every drop reason), and the page says how many there are in all.
    ``options``: how ``path`` is read (``show.load_view``). An existing ``out_file`` must be
    such a page: a user's file is never rewritten."""
    v = load_view(path, options)
    out = own_file(out_file, GENERATOR, "show --html",
                   inputs=[path, v.path], flag="--html")
    sample = _sample(v.rows, max_rows, seed)
    data = {"rows": [_page_row(r) for r in sample], "total": len(v.rows)}
    statuses = [s for s in ("kept", "dropped") if any(r["_status"] == s for r in v.rows)]
    gen = next((m for m in v.chain if m.get("kind") == "generate"), {})
    facts = [("rows", str(len(v.rows)))] + [(s, str(v.count(s))) for s in statuses]
    if gen:
        facts += [("teacher", str(gen.get("model", "?"))),
                  ("prompt", str((gen.get("prompt") or {}).get("name", "?")))]
    hist = ""
    for metric, values in row_lengths(v.rows).items():
        series = {s or "rows": [x for x, r in zip(values, v.rows) if r["_status"] == s]
                  for s in (statuses or [None])}
        hist += _svg_hist(metric, series)
    page = Template(PAGE).substitute(
        generator=GENERATOR,
        title=html.escape(f"distill show: {v.path}"),
        heading=html.escape(str(v.path)), kind=html.escape(v.kind),
        facts="".join(f"<div class='fact'><b>{html.escape(v_)}</b><span>{html.escape(k)}"
                      "</span></div>" for k, v_ in facts),
        funnel=_svg_funnel(v.funnel) if v.funnel else
        "<p class='muted'>No filter funnel: this dataset was not filtered.</p>",
        reasons=_reasons_table(v.reasons), histograms=hist,
        columns=html.escape(", ".join(f"{c} ({t})" for c, t in v.columns)),
        status_options="".join(f"<option value='{s}'>{s}</option>" for s in statuses),
        reason_options="".join(f"<option value='{html.escape(r, quote=True)}'>"
                               f"{html.escape(r)} ({c})</option>" for r, c in v.reasons.items()),
        sampled=html.escape(f"{len(sample)} of {len(v.rows)} rows embedded"
                            + (" (a sample)" if len(sample) < len(v.rows) else "")),
        data=json.dumps(data, ensure_ascii=False).replace("<", "\\u003c"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def _sample(rows: list[dict], max_rows: int, seed: int) -> list[dict]:
    if len(rows) <= max_rows:
        return rows
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["_status"], drop_reason(r)), []).append(i)
    quota = {g: min(len(idx), max(1, round(max_rows * len(idx) / len(rows))))
             for g, idx in groups.items()}  # proportional, but every drop reason shows up
    while sum(quota.values()) > max_rows and max(quota.values()) > 1:
        quota[max(quota, key=quota.get)] -= 1
    rng = random.Random(seed)
    picked = [i for g, idx in groups.items() for i in rng.sample(idx, quota[g])]
    return [rows[i] for i in sorted(picked)[:max_rows]]


def _page_row(r: dict) -> dict:
    prompt, completion = texts(r)
    return {"id": str(r.get("id", "")), "status": r["_status"] or "", "split": r["_split"] or "",
            "reason": drop_reason(r),
            "question": _clip(str(r.get("question") or prompt), 400),
            "prompt": _clip(prompt), "completion": _clip(completion),
            "false_step": r.get("false_step") or "",
            "answer": "" if r.get("answer") is None else str(r["answer"]),
            "gold": "" if r.get("gold") is None else str(r["gold"]),
            "tokens": r.get("tokens")}


def _clip(text: str, n: int = TEXT_CLIP) -> str:
    return text if len(text) <= n else text[:n] + f" … ({len(text) - n} more characters)"


def _reasons_table(reasons: dict[str, int]) -> str:
    if not reasons:
        return ""
    body = "".join(f"<tr><td>{html.escape(r)}</td><td class='num'>{c}</td></tr>"
                   for r, c in reasons.items())
    return ("<table class='reasons'><thead><tr><th>drop reason</th><th>rows</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _svg_funnel(fun: dict) -> str:
    labels = ["input"] + [s["stage"] for s in fun["stages"]]
    counts = [fun["rows_in"]] + [s["kept"] for s in fun["stages"]]
    top, row_h, label_w, bar_w = max(counts + [1]), 28, 130, 380
    height = row_h * len(labels) + 10
    parts = [(f"<svg id='funnel-chart' xmlns='http://www.w3.org/2000/svg' role='img' "
             f"aria-label='filter funnel' width='640' height='{height}' "
             f"viewBox='0 0 640 {height}'>")]
    for i, (label, c) in enumerate(zip(labels, counts)):
        y, w = 5 + i * row_h, max(1.0, bar_w * c / top)
        parts.append(f"<g class='bar' data-stage='{html.escape(label, quote=True)}' "
                     f"data-count='{c}'><text x='{label_w - 8}' y='{y + 18}' "
                     f"text-anchor='end'>{html.escape(label)}</text>"
                     f"<rect x='{label_w}' y='{y + 3}' width='{w:.1f}' height='{row_h - 8}' "
                     f"rx='3' fill='#4c72b0'/><text x='{label_w + w + 6:.1f}' y='{y + 18}'>"
                     f"{c} ({pct(c, fun['rows_in'])})</text></g>")
    return "".join(parts) + "</svg>"


COLORS = {"kept": "#4c72b0", "dropped": "#dd8452", "rows": "#4c72b0"}


def _svg_hist(metric: str, series: dict[str, list[int]], bins: int = 30) -> str:
    values = [x for vs in series.values() for x in vs]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    step = max((hi - lo) / bins, 1e-9)
    counts = {s: [0] * bins for s in series}
    for s, vs in series.items():
        for x in vs:
            counts[s][min(int((x - lo) / step), bins - 1)] += 1
    peak = max(max(c) for c in counts.values()) or 1
    w, h, left, bottom = 420, 170, 36, 24
    bw = (w - left - 8) / bins
    parts = [(f"<figure class='hist'><svg class='hist-chart' xmlns='http://www.w3.org/2000/svg' "
             f"role='img' aria-label='{html.escape(metric, quote=True)} histogram' width='{w}' "
             f"height='{h}' viewBox='0 0 {w} {h}'>"),
             f"<line x1='{left}' y1='{h - bottom}' x2='{w - 8}' y2='{h - bottom}' stroke='#999'/>",
             f"<text x='{left - 4}' y='14' text-anchor='end' class='tick'>{peak}</text>",
             f"<text x='{left}' y='{h - 6}' class='tick'>{lo}</text>",
             f"<text x='{w - 8}' y='{h - 6}' text-anchor='end' class='tick'>{hi}</text>"]
    for s, cs in counts.items():
        for i, c in enumerate(cs):
            if c:
                bh = (h - bottom - 10) * c / peak
                parts.append(f"<rect x='{left + i * bw:.1f}' y='{h - bottom - bh:.1f}' "
                             f"width='{max(bw - 1, 1):.1f}' height='{bh:.1f}' "
                             f"fill='{COLORS.get(s, '#55a868')}' fill-opacity='0.65'>"
                             f"<title>{html.escape(s)}: {c}</title></rect>")
    legend = " ".join(f"<span style='color:{COLORS.get(s, '#55a868')}'>■ {html.escape(s)} "
                      f"({len(series[s])})</span>" for s in series)
    return "".join(parts) + (f"</svg><figcaption>{html.escape(metric)} &nbsp; {legend}"
                             "</figcaption></figure>")


GENERATOR = '<meta name="generator" content="distill show">'  # marks the pages show wrote
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
$generator
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header,main{max-width:1100px;margin:0 auto;padding:12px 20px}
h1{font-size:18px;margin:8px 0 2px;word-break:break-all} h2{font-size:16px;margin:22px 0 8px}
.muted{color:#777}.facts{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.fact{background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px 12px}
.fact b{display:block;font-size:16px}.fact span{color:#777;font-size:12px}
svg text{font-size:12px;fill:#333} .tick{font-size:10px;fill:#777}
.charts{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
figure{margin:0} figcaption{font-size:12px;color:#555}
table{border-collapse:collapse;background:#fff} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
.num{text-align:right}
.controls{display:flex;gap:8px;flex-wrap:wrap;align-items:center;position:sticky;top:0;background:#fafafa;padding:8px 0}
.controls input{flex:1;min-width:220px;padding:5px 8px} select{padding:4px}
.row{background:#fff;border:1px solid #ddd;border-radius:6px;margin:6px 0;padding:6px 10px}
.row summary{cursor:pointer;display:flex;gap:8px;align-items:baseline}
.badge{font-size:11px;border-radius:10px;padding:1px 8px;background:#e8eef8;color:#2a4f8f;white-space:nowrap}
.badge.dropped{background:#fbe9dd;color:#9a4a14}.badge.reason{background:#f1f1f1;color:#444}
.q{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;flex:1}
pre{white-space:pre-wrap;word-break:break-word;background:#f6f6f6;padding:8px;border-radius:4px;margin:4px 0}
.label{font-size:12px;color:#777;margin-top:6px}
mark.false-step{background:#ffd6d6;color:#8a1010;border-radius:3px;padding:0 2px}
</style></head>
<body><header><div class="muted">distill show · $kind</div><h1>$heading</h1>
<div class="facts">$facts</div></header>
<main>
<section id="funnel"><h2>Filter funnel</h2>$funnel $reasons</section>
<section id="lengths"><h2>Lengths</h2><div class="charts">$histograms</div></section>
<section id="browse"><h2>Rows</h2>
<div class="muted">$sampled. Columns: $columns</div>
<div class="controls">
<input id="search" type="search" placeholder="search id, prompt, completion, answer…" autocomplete="off">
<select id="status"><option value="all">kept and dropped</option>$status_options</select>
<select id="reason"><option value="all">any drop reason</option>$reason_options</select>
<span id="count" class="muted"></span></div>
<div id="rows"></div></section>
</main>
<script id="data" type="application/json">$data</script>
<script>
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("data").textContent);
  var LIMIT = 200;
  var search = document.getElementById("search"), status = document.getElementById("status"),
      reason = document.getElementById("reason"), list = document.getElementById("rows"),
      count = document.getElementById("count");
  data.rows.forEach(function (r) {
    r.hay = [r.id, r.question, r.prompt, r.completion, r.answer, r.gold, r.reason].join("\\n").toLowerCase();
  });
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function card(r) {
    var d = el("details", "row"), s = el("summary");
    d.dataset.id = r.id; d.dataset.status = r.status; d.dataset.reason = r.reason;
    if (r.status) s.appendChild(el("span", "badge " + r.status, r.status));
    if (r.split) s.appendChild(el("span", "badge", r.split));
    if (r.reason) s.appendChild(el("span", "badge reason", r.reason));
    s.appendChild(el("code", "", r.id));
    s.appendChild(el("span", "q", r.question));
    d.appendChild(s);
    var facts = [];
    if (r.gold) facts.push("gold " + r.gold);
    if (r.answer) facts.push("answer " + r.answer);
    if (r.tokens !== null && r.tokens !== undefined) facts.push(r.tokens + " tokens");
    if (facts.length) d.appendChild(el("div", "label", facts.join(" · ")));
    d.appendChild(el("div", "label", "prompt")); d.appendChild(el("pre", "", r.prompt));
    d.appendChild(el("div", "label", "completion")); d.appendChild(completion(r));
    return d;
  }
  function completion(r) {  // the steps stage's false step, marked
    var pre = el("pre"), at = r.false_step ? r.completion.indexOf(r.false_step) : -1;
    if (at < 0) { pre.textContent = r.completion; return pre; }
    var mark = el("mark", "false-step", r.false_step);
    mark.title = "false step";
    pre.append(r.completion.slice(0, at), mark, r.completion.slice(at + r.false_step.length));
    return pre;
  }
  function render() {
    var q = search.value.trim().toLowerCase(), st = status.value, rs = reason.value;
    var hits = data.rows.filter(function (r) {
      return (st === "all" || r.status === st) && (rs === "all" || r.reason === rs) &&
        (!q || r.hay.indexOf(q) !== -1);
    });
    list.replaceChildren.apply(list, hits.slice(0, LIMIT).map(card));
    count.textContent = hits.length + " of " + data.rows.length + " rows" +
      (hits.length > LIMIT ? " (showing the first " + LIMIT + ")" : "");
  }
  search.addEventListener("input", render);
  status.addEventListener("change", render);
  reason.addEventListener("change", render);
  render();
})();
</script></body></html>
"""
