"""One-pass KD: ``distill train kd --offline-logits`` reads the top-k log-probs that
``distill generate --logprobs K`` stored, through filter and publish, with the student's own
prompt (context distillation), and refuses what does not belong to the student."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from kd_models import KD_ARGS, sharp_teacher
from test_sft_toy import build_toy_model, split

from distill import io
from distill.errors import DistillError
from distill.sft.config import build_config
from distill.sft.kd.config import DistillKDConfig

K = 8
ARGS = {**KD_ARGS, "max_length": 256}


def prompt_file(folder: Path) -> Path:
    """A two-shot teacher prompt for the toy task: the student drops the exemplars."""
    path = folder / "toy-2shot.yaml"
    path.write_text(yaml.safe_dump({
        "name": "toy-2shot", "kind": "cot", "user": "{{ question }}",
        "few_shot": [{"question": "12+34", "response": "2+4=6, write 6 carry 0. "
                      "1+3+0=4.\n#### 46"},
                     {"question": "57+25", "response": "7+5=12, write 2 carry 1. "
                      "5+2+1=8.\n#### 82"}],
        "sampling": {"temperature": 1.0, "max_tokens": 24, "seed": 0}}))
    return path


def problems(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": r["id"], "question": r["messages"][-1]["content"]})
                            + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """(generation folder, filter output, held-out generation, student, teacher): the teacher's
    samples (two-shot prompt, top-8 log-probs) of 48 toy problems and of 8 others."""
    from distill.datagen import generate
    from distill.filters.pipeline import run_filter

    root = tmp_path_factory.mktemp("onepass")
    train, test = split(48, 8)
    student = build_toy_model(root / "student", hidden=32)
    teacher = sharp_teacher(root / "teacher", scale=3.0)  # peaked, yet varied samples
    prompt = prompt_file(root)
    gen, heldout = root / "generate", root / "heldout"
    for rows, out in ((train, gen), (test, heldout)):
        generate(str(prompt), str(problems(rows, root / f"{out.name}.jsonl")), str(out),
                 model=str(teacher), backend="hf", logprobs=K, progress=False)
    (root / "filter.yaml").write_text(yaml.safe_dump({"stages": [{"quality": {
        "min_chars": 1, "drop_truncated": False, "min_unique_word_ratio": None,
        "max_repeated_ngram_share": None}}]}))
    run_filter(gen, root / "filter", config=root / "filter.yaml")
    return gen, root / "filter", heldout, student, teacher


def topk_kl(student: Path, heldout: Path) -> float:
    """Mean KL over the held-out generated tokens between the teacher's stored top-k (under its
    two-shot prompt) and the student (under the zero-shot prompt), summed over the top-k."""
    from transformers import AutoModelForCausalLM

    _, _, (columns, _, top_ids, top_lps) = examples(student, heldout, heldout,
                                                    drop_few_shot=True)
    model = AutoModelForCausalLM.from_pretrained(student).eval()
    total, count = 0.0, 0
    for e in range(len(columns)):
        labels = np.asarray(columns[e]["labels"])
        with torch.no_grad():
            q = model(input_ids=torch.tensor([columns[e]["input_ids"]])).logits[0]
        q = q.log_softmax(-1)
        for j in np.flatnonzero(labels != -100):
            ids, p = torch.tensor(top_ids[e].as_py()[j]), torch.tensor(top_lps[e].as_py()[j])
            total += float((p.exp() * (p - q[j - 1, ids])).sum())
            count += 1
    return total / count


def examples(student: Path, data, gen: Path, **fields):
    """The training sequences and top-k columns ``train kd --offline-logits gen`` builds."""
    from transformers import AutoTokenizer

    from distill.sft.data import load_rows
    from distill.sft.kd.generated import Generation, build_examples

    config = build_config(config_class=DistillKDConfig, output_dir="unused",
                          offline_logits=str(gen), **{**ARGS, **fields})
    rows, _, _ = load_rows(data)
    tokenizer = AutoTokenizer.from_pretrained(student)
    return rows, tokenizer, build_examples(rows, tokenizer, config, Generation.read(gen),
                                           verbose=False)


def test_generate_keeps_the_sampled_ids_and_filter_and_publish_keep_the_signals(generated,
                                                                                tmp_path):
    from transformers import AutoTokenizer

    from distill.data import read
    from distill.publish.publish import publish

    gen, filtered, _, _, teacher = generated
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    rows = io.read_rows(gen)
    for r in rows:
        assert len(r["token_ids"]) == len(r["top_ids"]) == len(r["top_logprobs"]) == r["tokens"]
        assert tokenizer.decode(r["token_ids"], skip_special_tokens=True) == r["completion"]
    kept = {r["id"]: r for r in io.read_rows(filtered / "kept")}
    assert 0 < len(kept) <= len(rows)
    publish(filtered, tmp_path / "pub", test_size=0.25)
    published = read(str(tmp_path / "pub")).dataset
    for r in published:
        assert r["token_ids"] == kept[r["id"]]["token_ids"]
        assert r["top_ids"] == kept[r["id"]]["top_ids"]
        np.testing.assert_allclose(r["top_logprobs"], kept[r["id"]]["top_logprobs"])


def test_the_stored_top_k_is_the_teachers_at_the_generated_tokens(generated):
    """With the teacher's own prompt, the columns equal a teacher forward over the sequence."""
    from transformers import AutoModelForCausalLM

    gen, filtered, _, student, teacher = generated
    rows, _, (columns, report, top_ids, top_lps) = examples(student, filtered / "kept", gen)
    assert report.examples == len(rows) and not report.dropped
    model = AutoModelForCausalLM.from_pretrained(teacher).eval()
    for e in (0, 7):
        ids, labels = columns[e]["input_ids"], np.asarray(columns[e]["labels"])
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
        at = np.flatnonzero(labels[1:] != -100)  # predicts token at + 1
        values, indices = logp[at].topk(K, dim=-1)
        stored = top_ids[e].as_py()
        assert [stored[j] for j in range(len(ids)) if labels[j] == -100] == \
            [[]] * int((labels == -100).sum())
        np.testing.assert_array_equal([stored[j + 1] for j in at], indices.numpy())
        np.testing.assert_allclose([top_lps[e].as_py()[j + 1] for j in at], values.numpy(),
                                   atol=1e-4)


def test_a_zero_shot_student_learns_on_the_generated_ids_under_its_own_prompt(generated):
    gen, filtered, _, student, _ = generated
    rows, tokenizer, (columns, _, top_ids, _) = examples(student, filtered / "kept", gen,
                                                         drop_few_shot=True)
    by_id = {r["id"]: r for r in io.read_rows(gen)}
    for e, row in enumerate(rows):
        made = by_id[row["id"]]
        assert len(made["messages"]) == 5  # 2 exemplars (user, assistant) + the question
        prompt = tokenizer.apply_chat_template(made["messages"][-1:], tokenize=False,
                                               add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids, labels = columns[e]["input_ids"], columns[e]["labels"]
        assert ids == prompt_ids + made["token_ids"]
        assert labels[len(prompt_ids):] == made["token_ids"]
        assert set(labels[:len(prompt_ids)]) == {-100}
        assert top_ids[e].as_py()[len(prompt_ids):] == made["top_ids"]


def test_kd_and_sft_drop_the_same_exemplars_and_keep_the_samples_own_turns(generated,
                                                                            tmp_path):
    """Rows of a conversation (an earlier question and answer before the last question, after
    the two exemplars): one-pass KD's prompt is sft's, and both keep the earlier turns."""
    from distill.sft.data import build_examples as sft_examples

    gen, filtered, _, student, _ = generated
    made = io.read_rows(filtered / "kept")
    assert {r["shots"] for r in made} == {2}
    earlier = [{"role": "user", "content": "11+11"}, {"role": "assistant", "content": "#### 22"}]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({
        "id": r["id"], "shots": r["shots"], "completion": r["completion"],
        "messages": r["messages"][:4] + earlier + r["messages"][4:]}) + "\n" for r in made))
    rows, tokenizer, (kd, _, _, _) = examples(student, data, gen, drop_few_shot=True)
    config = build_config(config_class=DistillKDConfig, output_dir="unused",
                          offline_logits=str(gen), drop_few_shot=True, **ARGS)
    sft, _ = sft_examples(rows, tokenizer, config, verbose=False)
    by_id = {r["id"]: r for r in made}
    for e, row in enumerate(rows):
        prompt = kd[e]["input_ids"][:len(kd[e]["input_ids"]) - len(by_id[row["id"]]["token_ids"])]
        assert sft[e]["input_ids"][:len(prompt)] == prompt
        text = tokenizer.decode(prompt)
        assert "11+11" in text and "#### 22" in text and "12+34" not in text


def test_one_pass_kd_moves_the_student_toward_the_teacher(generated, tmp_path):
    from distill.sft.kd.train import train_kd
    from distill.sft.train import train_sft

    gen, filtered, heldout, student, teacher = generated
    before = topk_kl(student, heldout)
    result = train_kd(str(student), filtered / "kept", tmp_path / "kd", offline_logits=str(gen),
                      drop_few_shot=True, alpha=1.0, max_steps=12, **ARGS)
    train_sft(str(student), filtered / "kept", tmp_path / "sft", drop_few_shot=True,
              max_steps=12, **ARGS)
    history = json.loads((tmp_path / "kd" / "trainer_state.json").read_text())["log_history"]
    kd = [h["kd"] for h in history if "kd" in h]
    assert kd[-1] < 0.95 * kd[0], kd
    after, sft = topk_kl(tmp_path / "kd", heldout), topk_kl(tmp_path / "sft", heldout)
    print(f"held-out top-{K} KL(teacher || student): untrained {before:.3f}, sft {sft:.3f}, "
          f"one-pass kd {after:.3f}")
    assert after < before and after < sft
    card = (tmp_path / "kd" / "README.md").read_text()
    assert f"one pass: top-{K} log-probs of `{teacher}`" in card
    run = json.loads((tmp_path / "kd" / "distill_sft.json").read_text())
    assert run["logits_top_k"] == K
    assert result.data["examples"] == len(io.read_rows(filtered / "kept"))


def test_a_published_generation_trains_in_one_pass(generated, tmp_path):
    from distill.publish.publish import publish
    from distill.sft.kd.train import train_kd

    _, filtered, _, student, _ = generated
    publish(filtered, tmp_path / "pub")
    result = train_kd(str(student), tmp_path / "pub", tmp_path / "kd",
                      offline_logits=str(tmp_path / "pub"), drop_few_shot=True, max_steps=1,
                      **ARGS)
    assert result.metrics["global_step"] == 1


def rewrite(gen: Path, out: Path, change) -> tuple[Path, str]:
    """A copy of the generation whose first row went through ``change``; (folder, row id)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copytree(gen, out)
    paths = io.shard_paths(out)
    table = pa.concat_tables([pq.read_table(p) for p in paths])
    rows = table.to_pylist()
    change(rows[0])
    for p in paths:
        p.unlink()
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), paths[0])
    return out, rows[0]["id"]


@pytest.mark.parametrize("case, change, message", [
    ("cut", lambda r: r.update(top_ids=r["top_ids"][:-2], top_logprobs=r["top_logprobs"][:-2]),
     "the rows were cut after generation"),
    ("edited", lambda r: r.update(completion=r["completion"][:-3]),
     "its completion is not the text of its token_ids"),
    ("beyond", lambda r: r["top_ids"][0].__setitem__(0, 10_000),
     "top_ids holds id 10000, beyond the 259 ids the student and the generation's model share"),
])
def test_rows_cut_edited_or_out_of_vocabulary_are_refused(generated, tmp_path, case, change,
                                                         message):
    from distill.sft.kd.train import train_kd

    gen, _, _, student, _ = generated
    bad, row_id = rewrite(gen, tmp_path / case, change)
    with pytest.raises(DistillError, match=f"row {row_id}.*{message}"):
        train_kd(str(student), bad, tmp_path / "kd", offline_logits=str(bad), max_steps=1,
                 **ARGS)


def test_another_tokenizer_and_a_small_k_are_refused(generated, tmp_path, tiny_model, capsys):
    from distill.cli import main
    from distill.sft.kd.train import train_kd

    gen, filtered, _, student, teacher = generated
    with pytest.raises(DistillError, match=f"generated by {teacher}, whose tokenizer is not "
                       "the student's"):
        train_kd(tiny_model, filtered / "kept", tmp_path / "a", offline_logits=str(gen),
                 max_steps=1, **ARGS)
    with pytest.raises(DistillError, match=f"top_k 16 > the {K} log-probs per token in "
                       f".*generate with --logprobs 16"):
        train_kd(str(student), filtered / "kept", tmp_path / "b", offline_logits=str(gen),
                 top_k=16, max_steps=1, **ARGS)
    capsys.readouterr()
    assert main(["train", "kd", "--student", str(student), "--data", str(filtered / "kept"),
                 "--offline-logits", str(gen), "--out", str(tmp_path / "cli"), "--top-k", "16",
                 "--max_length", "256"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"top_k 16 > the {K} log-probs per token" in err[0]
    plain = without_signals(filtered / "kept", tmp_path / "plain")
    with pytest.raises(DistillError, match="not a distill logits capture, nor a generation "
                       "with top-k log-probs \\(no column token_ids, top_ids, top_logprobs\\)"):
        train_kd(str(student), plain, tmp_path / "c", offline_logits=str(plain), max_steps=1,
                 **ARGS)


def without_signals(data: Path, out: Path) -> Path:
    """A copy of the rows without the top-k columns (what publish --no-metadata keeps)."""
    import pyarrow as pa

    rows = [{k: v for k, v in r.items() if k not in ("token_ids", "top_ids", "top_logprobs")}
            for r in io.read_rows(data)]
    writer = io.ShardWriter(out, pa.Table.from_pylist(rows).schema)
    writer.write(rows)
    writer.close()
    return out


def test_a_recipe_trains_kd_from_its_generation_with_no_second_teacher_pass(tiny_model, tmp_path,
                                                                            monkeypatch):
    import distill.sft.kd.teacher as teacher_module
    from distill.recipe import run_recipe

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was loaded for a second pass")

    monkeypatch.setattr(teacher_module, "load_teacher", no_teacher)
    spec = {
        "name": "onepass", "teacher": {"model": tiny_model, "backend": "hf"},
        "student": {"model": tiny_model},
        "generate": {"task": "gsm8k", "split": "train", "limit": 4, "prompt": "gsm8k-cot-8shot",
                     "shots": 2, "max_tokens": 16, "logprobs": 5, "progress": False},
        "filter": {"stages": [{"quality": {"min_chars": 1, "drop_truncated": False,
                                           "min_unique_word_ratio": None,
                                           "max_repeated_ngram_share": None}}]},
        "train": {"method": "kd", "offline_logits": "generate", "drop_few_shot": True,
                  "max_steps": 2, "per_device_train_batch_size": 2, "report_to": "none",
                  "max_length": 1024},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(spec))
    summary = run_recipe(path, tmp_path / "run")
    assert summary["stages"]["train"]["result"]["global_step"] == 2
    run = json.loads((tmp_path / "run" / "train" / "distill_sft.json").read_text())
    assert run["config"]["offline_logits"] == str(tmp_path / "run" / "generate")
    assert run["config"]["teacher"] is None and run["logits_top_k"] == 5
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.is_dir()) == \
        ["filter", "generate", "train"]  # no logits capture folder
    card = (tmp_path / "run" / "train" / "README.md").read_text()
    assert f"one pass: top-5 log-probs of `{tiny_model}`" in card


def test_a_stop_string_ends_the_generated_ids_and_one_pass_accepts_the_row(tiny_model, problems,
                                                                          tmp_path):
    """hf generate pads a row that hit its stop string while others went on: the pads are not
    the teacher's tokens (nor counted in ``tokens``), and the stop string cut from the text is
    still in the ids."""
    from transformers import AutoTokenizer

    from distill.datagen import generate
    from distill.sft.kd.generated import Generation

    prompt = tmp_path / "stop.yaml"
    prompt.write_text(yaml.safe_dump({"name": "stop", "kind": "cot", "user": "{{ question }}",
                                      "sampling": {"stop": ["e"], "temperature": 1.0,
                                                   "max_tokens": 24}}))
    generate(str(prompt), str(problems), str(tmp_path / "gen"), model=tiny_model, backend="hf",
             logprobs=3, n=2, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    generation = Generation.read(tmp_path / "gen")
    rows = io.read_rows(tmp_path / "gen")
    stopped = [r for r in rows if r["tokens"] < 24]
    assert len(stopped) >= 6, [r["tokens"] for r in rows]
    for r in rows:
        assert tokenizer.pad_token_id not in r["token_ids"]
        assert len(r["token_ids"]) == r["tokens"] == len(r["top_ids"])
        ids, _, _ = generation.signals(r["id"], r["completion"], tokenizer)
        assert ids.tolist() == r["token_ids"]
    for r in stopped:
        text = tokenizer.decode(r["token_ids"], skip_special_tokens=True)
        assert text.startswith(r["completion"] + "e")
