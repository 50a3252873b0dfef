"""The training loop knows no stage: a stage is an objective looked up by name, and a new one
trains without touching the loop. Checkpoints are accelerate's state plus the adapter; the
earlier format is refused with one line."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass

import pytest
import torch

from llm2vec_retrieval.training import SimCSEConfig, TrainConfig, train
from llm2vec_retrieval.training.objectives import (
    OBJECTIVES,
    MicroStep,
    Objective,
    register_objective,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def texts_file(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(f"sentence number {i} about topic {i % 7}" for i in range(40)) + "\n")
    return str(path)


@dataclass
class ToyConfig(TrainConfig):
    """A stage the loop has never heard of."""

    stage = "toy"


class _MeanNorm(torch.nn.Module):
    """Mean of the last hidden states; the loss pulls its norm towards 1."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return ((hidden.mean(dim=(0, 1)).norm() - 1.0) ** 2).float()


@register_objective
class ToyObjective(Objective):
    config_class = ToyConfig

    def build_module(self, encoder):
        self.tokenizer = encoder.tokenizer
        return _MeanNorm(encoder.model)

    def batches(self, encoder, stats):
        def make(pass_index, rng, first):
            texts = [f"toy text {i}" for i in range(8)]
            rng.shuffle(texts)
            for i in range(0, 8, 2):
                yield texts[i : i + 2]

        return make

    def start_fields(self):
        return {"toy": True}

    def micro_step(self, step: MicroStep, batch):
        feats = self.tokenizer(batch, return_tensors="pt", padding=True)
        with step.no_sync(), step.autocast():
            loss = step.module(
                feats["input_ids"].to(step.device), feats["attention_mask"].to(step.device)
            )
        step.backward(loss * step.scale)
        return float(loss.detach()), int(feats["attention_mask"].sum())


def test_the_loop_has_no_stage_specific_code():
    import ast

    from llm2vec_retrieval.training import trainer

    tree = ast.parse(inspect.getsource(trainer))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    assert "isinstance" not in names
    for name in ("MNTPConfig", "SimCSEConfig", "SupervisedConfig", "mask_token", "info_nce"):
        assert name not in names, name
    assert not {"mntp", "simcse", "supervised"} & strings
    assert {"mntp", "simcse", "supervised", "toy"} <= set(OBJECTIVES)


def test_a_registered_objective_trains_and_checkpoints(tiny_llama, texts_file, tmp_path):
    out = tmp_path / "toy"
    cfg = ToyConfig(
        model=tiny_llama,
        data=[texts_file],
        output=str(out),
        max_steps=2,
        save_steps=1,
        lr=1e-3,
        progress=False,
        num_threads=1,
    )
    result = train(cfg)
    assert result.step == 2 and len(result.losses) == 2
    assert all(torch.isfinite(torch.tensor(result.losses)))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[0] == {"event": "start", "stage": "toy", "max_steps": 2, "toy": True}
    assert (out / "adapter_model.safetensors").is_file()
    # accelerate's state, with the adapter instead of the full model
    ckpt = out / "checkpoints" / "step-000002"
    names = {p.name for p in ckpt.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "optimizer.bin",
        "scheduler.bin",
        "random_states_0.pkl",
        "trainer_state.json",
    } <= names
    assert not any(n.startswith(("model", "pytorch_model")) for n in names)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["format"] == 2 and state["step"] == 2 and state["stage"] == "toy"
    assert state["data_position"] == {"pass_index": 0, "batches_in_pass": 2}


def test_unregistered_stage_is_one_line(tmp_path, texts_file):
    @dataclass
    class Unknown(TrainConfig):
        stage = "unknown-stage"

    with pytest.raises(ValueError, match="no objective for stage 'unknown-stage'; registered: "):
        train(Unknown(data=[texts_file], output=str(tmp_path / "u")))


def test_old_format_checkpoint_is_refused_in_one_line(tiny_llama, texts_file, tmp_path, capsys):
    from llm2vec_retrieval.training.cli import main

    out = tmp_path / "old"
    old = out / "checkpoints" / "step-000005"
    old.mkdir(parents=True)
    # what the hand-rolled checkpoints held (the adapter files left out: never read)
    (old / "trainer_state.json").write_text(
        json.dumps({"step": 5, "stage": "simcse", "data_position": {}})
    )
    for name in ("optimizer.pt", "scheduler.pt", "rng.pt"):
        (old / name).write_bytes(b"")
    args = ["--model", tiny_llama, "--data", texts_file, "--output", str(out)]
    args += ["--max-steps", "6", "--batch-size", "4", "--no-progress", "--num-threads", "1"]
    assert main(["train", "simcse", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # before any model is loaded
    assert len(err) == 1
    assert "earlier llm2vec-retrieval version" in err[0] and "--no-resume" in err[0]
    assert old.is_dir(), "the old checkpoint is left as it was"
    # --no-resume starts over
    result = train(
        SimCSEConfig(
            model=tiny_llama,
            data=[texts_file],
            output=str(out),
            max_steps=1,
            batch_size=4,
            resume=False,
            progress=False,
            num_threads=1,
        )
    )
    assert result.step == 1 and result.resumed_from is None
