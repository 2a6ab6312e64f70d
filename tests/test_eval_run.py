"""``distill eval`` end to end on the tiny random model (hf backend), and ``eval compare``."""

import json

import pytest

from distill import io
from distill.cli import main
from distill.eval.compare import compare
from distill.eval.run import evaluate, resolve_eval_model, summarize


def _task(tmp_path, n=4):
    path = tmp_path / "task.jsonl"
    rows = [{"id": f"t{i}", "question": f"What is {i} plus {i}?", "answer": str(2 * i)}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    """Two eval runs of the tiny model on the same items (one with samples)."""
    tmp = tmp_path_factory.mktemp("eval-runs")
    task = _task(tmp)
    a = tmp / "zero-shot"
    b = tmp / "sampled"
    assert main(["eval", "--model", tiny_model, "--data", str(task), "--out", str(a),
                 "--backend", "hf", "--max-tokens", "6", "--no-progress"]) == 0
    evaluate(tiny_model, str(task), b, backend="hf", n=4, max_tokens=6, progress=False)
    return tmp, task, a, b


def test_eval_writes_metrics_and_per_item_dataset(runs):
    _, _, a, b = runs
    m = json.loads((a / "metrics.json").read_text())
    assert m["items"] == 4 and m["prompt"] == "gsm8k-cot" and m["backend"] == "hf"
    assert m["params"] > 0 and m["max_tokens"] == 6 and m["n"] == 1
    for key in ("accuracy", "format_compliance", "answered", "mean_tokens", "truncated"):
        assert 0 <= m[key] <= (6 if key == "mean_tokens" else 1)
    assert m["accuracy_ci"][0] <= m["accuracy"] <= m["accuracy_ci"][1]
    assert m["speed"]["tokens_per_second"] > 0
    items = io.read_rows(a)
    assert [r["id"] for r in items] == ["t0", "t1", "t2", "t3"]
    assert {"question", "gold", "completion", "answer", "correct", "tokens"} <= set(items[0])
    assert summarize(items)["accuracy"] == m["accuracy"]  # metrics follow from the items
    assert io.read_manifest(a)["kind"] == "eval"
    assert len(io.read_rows(a / "generations" / "greedy")) == 4

    s = json.loads((b / "metrics.json").read_text())
    assert set(s["pass@k"]) == set(s["maj@k"]) == {"1", "2", "4"}
    assert s["pass@k"]["1"] == pytest.approx(s["sample_accuracy"])
    assert s["pass@k"]["1"] <= s["pass@k"]["2"] <= s["pass@k"]["4"]
    rows = io.read_rows(b)
    assert all(len(r["sample_answers"]) == 4 for r in rows)
    assert len(io.read_rows(b / "generations" / "samples")) == 16


def test_eval_rerun_resumes_and_extends(runs, tiny_model, capsys):
    _, task, a, _ = runs
    before = io.read_rows(a / "generations" / "greedy")
    assert main(["eval", "--model", tiny_model, "--data", str(task), "--out", str(a),
                 "--backend", "hf", "--max-tokens", "6", "--no-progress"]) == 0
    assert io.read_rows(a / "generations" / "greedy") == before  # nothing regenerated
    out = capsys.readouterr().out
    assert "accuracy" in out


def test_eval_gsm8k_limit(tiny_model, tmp_path):
    res = evaluate(tiny_model, "gsm8k", tmp_path / "g", backend="hf", limit=3, max_tokens=4,
                   progress=False)
    assert res.metrics["items"] == 3 and res.metrics["task"] == "gsm8k"
    rows = io.read_rows(tmp_path / "g")
    assert [r["id"] for r in rows] == ["gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"]
    assert rows[0]["gold"] == "18"


def test_eval_pot_runs_programs(tiny_model, tmp_path):
    res = evaluate(tiny_model, str(_task(tmp_path, 2)), tmp_path / "pot", prompt="gsm8k-pot",
                   backend="hf", max_tokens=4, progress=False)
    assert res.metrics["kind"] == "pot" and res.metrics["items"] == 2


def test_eval_bad_input_is_one_line(tmp_path, capsys, tiny_model):
    assert main(["eval", "--data", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert main(["eval", "--model", tiny_model]) == 2
    assert "needs --data and --out" in capsys.readouterr().err
    assert main(["eval", "--data", str(_task(tmp_path)), "--out", str(tmp_path / "y"),
                 "--prompt", "instruction", "--model", tiny_model]) == 2
    assert "needs a cot or pot prompt" in capsys.readouterr().err
    assert main(["eval", "compare", str(tmp_path), "--out", str(tmp_path / "c")]) == 2
    assert "no metrics.json" in capsys.readouterr().err


def test_resolve_train_output_folder(tiny_model, tmp_path):
    import shutil

    shutil.copytree(tiny_model, tmp_path / "run" / "checkpoint-2")
    shutil.copytree(tiny_model, tmp_path / "run" / "checkpoint-10")
    assert resolve_eval_model(str(tmp_path / "run")).endswith("checkpoint-10")
    assert resolve_eval_model(tiny_model) == tiny_model


def test_compare_writes_tables_and_plots(runs, capsys):
    tmp, _, a, b = runs
    out = tmp / "report"
    assert main(["eval", "compare", str(a), str(b), "--out", str(out),
                 "--bootstrap", "500"]) == 0
    for name in ("compare.md", "compare.html", "compare.json", "accuracy.png",
                 "accuracy_vs_params.png", "accuracy_vs_tokens.png", "pareto.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "compare.json").read_text())
    assert result["teacher"] == "zero-shot"
    student = result["runs"][1]
    assert student["shared_items"] == 4 and 0 <= student["agreement"] <= 1
    assert sum(student[k] for k in ("both_correct", "only_teacher", "only_student",
                                    "neither")) == 4
    md = (out / "compare.md").read_text()
    assert "retention vs zero-shot" in md and "pass@4" in md and "![accuracy]" in md
    assert "| gsm8k-cot (0-shot) |" in md  # the prompt and its number of worked examples
    assert "<table>" in (out / "compare.html").read_text()
    assert "zero-shot" in capsys.readouterr().out


def test_compare_divergence_on_held_out_texts(runs, tiny_model, tmp_path):
    _, _, a, b = runs
    texts = tmp_path / "held.txt"
    texts.write_text("The answer is 14.\nLet me think. 3 * 4 = 12 and 12 + 2 = 14.\n")
    result = compare([a, b], tmp_path / "r", texts=str(texts), bootstrap=200)
    d = result["divergence"][0]
    # the same model on both sides: no divergence, full agreement
    assert d["kl"] == pytest.approx(0, abs=1e-5) and d["js"] == pytest.approx(0, abs=1e-5)
    assert d["top1_agreement"] == 1.0 and d["top10_overlap"] == 1.0
    assert d["tokens"] > 0 and d["student_tokens_per_second"] > 0
    assert "KL(teacher‖student)" in (tmp_path / "r" / "compare.md").read_text()


def test_token_divergence_known_values():
    import torch

    from distill.eval.divergence import token_divergence

    t = torch.tensor([[0.0, 0.0]])           # p = (1/2, 1/2)
    s = torch.log(torch.tensor([[0.25, 0.75]]))
    d = token_divergence(t, s, top_k=1)
    kl = 0.5 * torch.log(torch.tensor(0.5 / 0.25)) + 0.5 * torch.log(torch.tensor(0.5 / 0.75))
    assert d["kl"] == pytest.approx(float(kl), abs=1e-6)
    assert 0 < d["js"] < d["kl"]


def test_pot_answers_come_from_the_sandbox():
    from distill.eval.run import score_rows

    rows = [{"completion": "```python\napples = 3\nprint(apples * 2)\n```", "gold": "6"},
            {"completion": "```python\nprint(7)\n```", "gold": "6"},
            {"completion": "```python\nraise ValueError('x')\n```", "gold": "6"},
            {"completion": "no program at all", "gold": "6"}]
    score_rows(rows, "pot", exec_timeout=5)
    assert [r["answer"] for r in rows] == ["6", "7", None, None]
    assert [r["correct"] for r in rows] == [True, False, False, False]
    assert [r["format_ok"] for r in rows] == [True, True, False, False]
    assert rows[0]["answer_format"] == "program" and "ValueError" in rows[2]["exec"]["stderr"]


@pytest.fixture
def adder_server():
    """An OpenAI-compatible HTTP server whose "model" adds the numbers of the problem and
    answers "#### <sum>" (wrongly, by one, for the numbers listed in ``wrong``)."""
    import re
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    wrong = {3}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # /v1/models
            self._send({"object": "list", "data": [{"id": "adder", "owned_by": "test"}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            problem = body["messages"][-1]["content"].split("Problem:")[-1]
            nums = [int(x) for x in re.findall(r"\d+", problem)]
            total = sum(nums) + (1 if nums and nums[0] in wrong else 0)
            text = f"Adding: {' + '.join(map(str, nums))} = {total}.\n#### {total}"
            choices = [{"index": i, "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop"} for i in range(body.get("n", 1))]
            self._send({"choices": choices, "usage": {
                "prompt_tokens": 9, "completion_tokens": 7 * len(choices)}})

        def _send(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_eval_through_an_openai_compatible_server(adder_server, tmp_path):
    res = evaluate("adder", str(_task(tmp_path)), tmp_path / "srv", backend="openai",
                   base_url=adder_server, n=2, progress=False)
    m = res.metrics
    # items 0..3 ask "What is i plus i?": all right but item 3
    assert m["accuracy"] == 0.75 and m["format_compliance"] == 1.0
    assert m["pass@k"] == {"1": 0.75, "2": 0.75} and m["maj@k"] == {"1": 0.75, "2": 0.75}
    assert m["backend"] == "openai" and m["params"] is None and m["model"] == "adder"
    assert m["mean_tokens"] == 7
