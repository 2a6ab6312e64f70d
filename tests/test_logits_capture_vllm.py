"""``distill logits capture --backend vllm``: the engine's prompt log-probs, in the HF capture's
format, match the HF capture on the tiny model and resume like it (one engine per module)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from test_sft_toy import write_dataset
from tiny import CORPUS

from distill import io
from distill.sft.config import build_config
from distill.sft.kd.capture import capture_logits

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

K = 6
TEXTS = sorted(set(CORPUS))


@pytest.fixture(scope="module")
def engine(tiny_model):
    from distill.sft.kd.vllm_teacher import VLLMTeacher

    teacher = VLLMTeacher(tiny_model, K, max_model_len=256)
    yield teacher
    teacher.close()


@pytest.fixture(scope="module")
def captures(tiny_model, engine, tmp_path_factory):
    """(data, the hf capture, the vllm capture) of 14 rows in 3 shards."""
    root = tmp_path_factory.mktemp("capture-vllm")
    rows = [{"id": f"r{i}", "messages": [{"role": "user", "content": TEXTS[i % len(TEXTS)]}],
             "completion": TEXTS[(3 * i + 1) % len(TEXTS)]} for i in range(14)]
    data = write_dataset(root / "data", rows)
    config = build_config(output_dir="unused", max_length=128)
    hf = capture_logits(tiny_model, data, root / "hf", K, config=config, shard_size=5)
    vllm = capture_logits(tiny_model, data, root / "vllm", K, config=config, shard_size=5,
                          backend="vllm", engine=engine)
    return data, hf, vllm


def by_example(folder):
    return {r["example"]: r for r in io.read_rows(folder)}


def test_vllm_capture_matches_the_hf_capture(tiny_model, captures):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.sft.data import build_examples, load_rows

    data, hf, vllm = captures
    manifest = json.loads((vllm.out / "manifest.json").read_text())
    assert manifest["backend"] == "vllm" and manifest["complete"] and manifest["top_k"] == K
    assert (vllm.examples, vllm.tokens) == (hf.examples, hf.tokens) == (14, hf.tokens)
    hf_rows, vllm_rows = by_example(hf.out), by_example(vllm.out)
    rows, _, _ = load_rows(data)
    columns, _ = build_examples(rows, AutoTokenizer.from_pretrained(tiny_model),
                                build_config(output_dir="unused", max_length=128), verbose=False)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    compared = 0
    for e in range(14):
        a, b = hf_rows[e], vllm_rows[e]
        assert (a["id"], a["tokens"]) == (b["id"], b["tokens"])
        ids_a, ids_b = np.reshape(a["ids"], (-1, K)), np.reshape(b["ids"], (-1, K))
        lp_a, lp_b = np.reshape(a["logprobs"], (-1, K)), np.reshape(b["logprobs"], (-1, K))
        # Where the full distribution separates neighbours by > 1e-3, the ranks must agree.
        labels = torch.tensor(columns["labels"][e])
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([columns["input_ids"][e]])).logits[0, :-1]
        ref = logp[labels[1:] != -100].log_softmax(-1).topk(K + 1, dim=-1).values.numpy()
        gaps = -np.diff(ref, axis=1)  # (n, K): gap between rank j and rank j + 1
        clear = np.minimum(gaps, np.concatenate([np.full((len(gaps), 1), np.inf),
                                                 gaps[:, :-1]], axis=1)) > 1e-3
        np.testing.assert_array_equal(ids_b[clear], ids_a[clear])
        compared += int(clear.sum())
        # And each stored log-prob is the one the hf capture has for that id.
        same = ids_a == ids_b
        np.testing.assert_allclose(lp_b[same], lp_a[same], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(lp_b, ref[:, :K], rtol=1e-3, atol=2e-3)
    assert compared > 0.8 * hf.tokens * K  # most ranks are clear on this model


def test_vllm_capture_resumes_after_a_crash(tiny_model, captures, engine, tmp_path):
    data, _, vllm = captures
    out = tmp_path / "logits"
    shutil.copytree(vllm.out, out)
    before = sorted(io.read_rows(out), key=lambda r: r["example"])
    io.shard_paths(out)[-1].unlink()  # killed before the last shard was written
    manifest = json.loads((out / "manifest.json").read_text())
    io.write_manifest(out, {**manifest, "complete": False})
    again = capture_logits(tiny_model, data, out, K, shard_size=5, backend="vllm", engine=engine,
                           config=build_config(output_dir="unused", max_length=128))
    assert again.captured == 4 and again.examples == 14
    after = sorted(io.read_rows(out), key=lambda r: r["example"])
    assert [r["ids"] for r in after] == [r["ids"] for r in before]


def test_the_backend_flag(capsys):
    from distill.cli import build_parser

    common = ["logits", "capture", "--teacher", "t", "--data", "d", "--out", "o", "--top-k", "4"]
    assert build_parser().parse_args([*common, "--backend", "vllm"]).backend == "vllm"
    assert build_parser().parse_args(common).backend == "hf"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*common, "--backend", "onnx"])
    assert "invalid choice: 'onnx'" in capsys.readouterr().err


def test_generate_logprobs_are_what_a_second_pass_captures(engine, tiny_model):
    """One pass is enough: the top-k that vllm generation stores with each sampled token is the
    top-k that scoring prompt + generated ids again gives (what logits capture would store)."""
    from transformers import AutoTokenizer
    from vllm import SamplingParams, TokensPrompt

    from distill.datagen.backends.vllm import VLLMBackend

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = tokenizer.apply_chat_template([{"role": "user", "content": TEXTS[0]}], tokenize=False,
                                         add_generation_prompt=True)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    out = engine.llm.generate([TokensPrompt(prompt_token_ids=prompt)],
                              SamplingParams(temperature=1.0, seed=3, max_tokens=24, logprobs=K),
                              use_tqdm=False)[0]
    made = VLLMBackend._completion(out.outputs[0], len(prompt), K)
    assert made.token_ids == list(out.outputs[0].token_ids)
    assert len(made.token_ids) == made.tokens == len(made.top_ids) == 24
    [(ids, logprobs)] = engine.topk([prompt + made.token_ids],
                                    [[-100] * len(prompt) + made.token_ids], K, len(tokenizer))
    stored = np.asarray(made.top_logprobs)
    gaps = -np.diff(stored, axis=1)  # rank j vs j + 1, for j < K - 1
    clear = np.minimum(gaps, np.concatenate([np.full((len(gaps), 1), np.inf), gaps[:, :-1]],
                                            axis=1)) > 1e-3
    np.testing.assert_array_equal(ids[:, :-1][clear], np.asarray(made.top_ids)[:, :-1][clear])
    assert clear.mean() > 0.8
    np.testing.assert_allclose(logprobs, stored, rtol=1e-3, atol=2e-3)
