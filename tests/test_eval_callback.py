"""EvalCallback inside a real transformers Trainer on the tiny model."""

import json

import pytest


@pytest.mark.parametrize("with_trainer", [True, False])
def test_callback_logs_eval_metrics_during_training(tiny_model, tmp_path, with_trainer):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from distill.eval.callback import EvalCallback

    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + 1?",
                                        "answer": str(i + 1)}) + "\n" for i in range(3)))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    texts = ["Let me think. 3 * 4 = 12 and 12 + 2 = 14. #### 14"] * 8
    ds = datasets.Dataset.from_dict({"input_ids": [tokenizer(t)["input_ids"] for t in texts]})
    ds = ds.map(lambda r: {"labels": r["input_ids"]})
    args = TrainingArguments(output_dir=str(tmp_path / "train"), max_steps=2,
                             per_device_train_batch_size=4, logging_steps=1, report_to=[],
                             save_strategy="no", use_cpu=True, learning_rate=1e-3,
                             disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    callback = EvalCallback(str(task), every=1, limit=2, max_tokens=4,
                            trainer=trainer if with_trainer else None)
    trainer.add_callback(callback)
    trainer.train()

    assert [h["step"] for h in callback.history] == [1, 2]  # not again at the end: step 2 done
    logged = [h for h in trainer.state.log_history if "eval_task/accuracy" in h]
    assert [h["step"] for h in logged] == [1, 2]
    assert all(0 <= h["eval_task/accuracy"] <= 1 and h["eval_task/mean_tokens"] <= 4
               for h in logged)
    assert any("loss" in h for h in trainer.state.log_history)  # training logged as usual
    step = tmp_path / "train" / "eval" / "step-000002"
    assert json.loads((step / "metrics.json").read_text())["items"] == 2
    assert model.training  # train mode restored after each eval
    assert tokenizer.padding_side == "right"
