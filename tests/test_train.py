import csv
import json

import pytest
import torch
from safetensors.torch import load_file

import graspcheck

from conftest import FAST
from graspcheck.models import pretrained_config


def test_a_small_model_learns_a_clear_visual_difference(trained):
    assert trained.history[-1]["val_balanced_acc"] >= 0.9
    assert trained.history[-1]["train_loss"] < trained.history[0]["train_loss"]


def test_the_run_folder_holds_everything(trained):
    run = trained.run_dir
    for name in ("config.json", "split.csv", "metrics.csv", "results.png", "train_state.pt"):
        assert (run / name).is_file(), name
    kept = sorted(p.name for p in (run / "weights").iterdir())
    assert kept == ["best.safetensors", "epoch_002.safetensors", "epoch_004.safetensors", "epoch_006.safetensors", "last.safetensors"]
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    # The test table every 2nd epoch, as in the seed; counted over every test image.
    assert [bool(r["test_acc_success"]) for r in rows] == [False, True, False, True, False, True]
    assert json.loads((run / "config.json").read_text())["class_names"] == ["not_success", "success"]
    # Every file of a run gets the same permissions, whichever library wrote it (safetensors made last owner-only).
    modes = {path.name: path.stat().st_mode & 0o777 for path in [*run.iterdir(), *(run / "weights").iterdir()] if path.is_file()}
    assert len(set(modes.values())) == 1, modes


def test_per_class_accuracy_counts_every_sample(trained, dataset):
    # The seed counted only 2 samples per batch; here the validation accuracy is a fraction of all of them.
    with open(trained.run_dir / "split.csv") as f:
        val = [r for r in csv.DictReader(f) if r["split"] == "val"]
    per_class = {name: sum(r["label"] == name for r in val) for name in ("not_success", "success")}
    for name, total in per_class.items():
        accuracy = trained.history[-1][f"val_acc_{name}"]
        assert abs(accuracy * total - round(accuracy * total)) < 1e-6  # a whole number of images out of `total`


def test_validation_images_are_never_trained_on(trained):
    with open(trained.run_dir / "split.csv") as f:
        rows = list(csv.DictReader(f))
    train_paths = {r["path"] for r in rows if r["split"] == "train"}
    held_out = {r["path"] for r in rows if r["split"] != "train"}
    assert held_out and not (train_paths & held_out)


def test_checkpoint_carries_what_prediction_needs(trained):
    model = graspcheck.load(trained.best)
    assert model.info.model == "seednet"
    assert model.info.preprocess.size == (32, 32)
    assert model.class_names == ("not_success", "success")
    assert model.info.threshold == 0.5
    assert model.info.epoch >= 1


def test_resumed_run_ends_like_an_uninterrupted_one(dataset, tmp_path):
    full = graspcheck.train(dataset, epochs=4, seed=3, out=str(tmp_path / "full"), **FAST)

    def interrupt_after_epoch_2(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        graspcheck.train(dataset, epochs=4, seed=3, out=str(tmp_path / "cut"), callbacks=[interrupt_after_epoch_2], **FAST)
    resumed = graspcheck.train(resume=tmp_path / "cut")

    assert len(resumed.history) == 4
    for a, b in zip(full.history, resumed.history):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    full_weights, resumed_weights = load_file(full.last), load_file(resumed.last)
    assert all(torch.equal(full_weights[k], resumed_weights[k]) for k in full_weights)


def test_an_existing_run_folder_is_not_overwritten(dataset, tmp_path):
    out = tmp_path / "run"
    graspcheck.train(dataset, epochs=1, out=str(out), **FAST)
    before = (out / "weights" / "last.safetensors").read_bytes()
    with pytest.raises(graspcheck.GraspcheckError, match="--overwrite"):
        graspcheck.train(dataset, epochs=1, out=str(out), **FAST)
    assert (out / "weights" / "last.safetensors").read_bytes() == before


def test_overwrite_refuses_a_folder_that_merely_holds_a_config_json(dataset, tmp_path):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "config.json").write_text('{"my": 1}')
    (project / "main.py").write_text("x")
    with pytest.raises(graspcheck.GraspcheckError, match="not a training run written by graspcheck"):
        graspcheck.train(dataset, epochs=1, out=str(project), overwrite=True, **FAST)
    assert (project / "main.py").read_text() == "x" and (project / "src").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]  # no half-made sibling left behind


def test_overwrite_refuses_a_run_folder_holding_a_file_of_the_user(dataset, tmp_path):
    out = tmp_path / "run"
    graspcheck.train(dataset, epochs=1, out=str(out), **FAST)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(graspcheck.GraspcheckError, match="notes.txt, which graspcheck did not write"):
        graspcheck.train(dataset, epochs=1, out=str(out), overwrite=True, **FAST)
    assert (out / "notes.txt").read_text() == "mine" and (out / "weights" / "last.safetensors").is_file()


def test_an_interrupted_overwrite_keeps_the_old_run_and_a_finished_one_replaces_it(dataset, tmp_path):
    out = tmp_path / "run"
    graspcheck.train(dataset, epochs=1, seed=0, out=str(out), **FAST)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def interrupt(epoch, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        graspcheck.train(dataset, epochs=2, seed=1, out=str(out), overwrite=True, callbacks=[interrupt], **FAST)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    result = graspcheck.train(dataset, epochs=2, seed=1, out=str(out), overwrite=True, **FAST)
    assert result.run_dir == out and len(result.history) == 2
    assert json.loads((out / "config.json").read_text())["out"] == str(out)
    assert (out / "weights" / "epoch_002.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_default_run_folders_are_new_each_time(dataset):
    first = graspcheck.train(dataset, epochs=1, **FAST)
    second = graspcheck.train(dataset, epochs=1, **FAST)
    assert first.run_dir != second.run_dir and first.run_dir.parent == second.run_dir.parent


def test_sampler_draws_each_class_equally_often_from_imbalanced_labels():
    from graspcheck.training import epoch_order

    labels = torch.tensor([0] * 900 + [1] * 100)
    drawn = labels[epoch_order(labels, "sampler", seed=0)]
    assert 0.45 < drawn.float().mean().item() < 0.55
    shuffled = epoch_order(labels, "loss", seed=0)
    assert sorted(shuffled.tolist()) == list(range(1000))  # a plain shuffle sees every image once


def test_loss_weights_equalise_the_classes():
    from graspcheck.training import class_weights

    weights = class_weights(torch.tensor([0] * 30 + [1] * 10))
    assert torch.allclose(weights, torch.tensor([40 / 60, 40 / 20]))
    assert torch.allclose(class_weights(torch.tensor([0, 1] * 5)), torch.ones(2))


def test_training_on_imbalanced_data_with_each_balance_mode(tmp_path):
    from imagegen import make_dataset

    data = make_dataset(tmp_path / "data", episodes_per_class=4, frames=2)
    for path in sorted((data / "success").glob("attempt0[1-3]_*.png")):
        path.unlink()  # 2 success images against 8 not_success
    for mode in ("loss", "sampler", "none"):
        result = graspcheck.train(data, epochs=1, balance=mode, val_fraction=0, test_fraction=0, out=str(tmp_path / mode), **FAST)
        assert result.history[0]["train_loss"] > 0 and result.best.is_file()
        # Nothing held out: nothing to evaluate or report on (the log says how to evaluate elsewhere).
        assert result.evaluation is None and not (result.run_dir / "report.html").exists()


def test_a_separate_test_folder_is_evaluated(dataset, tmp_path):
    from imagegen import make_dataset

    test_dir = make_dataset(tmp_path / "test", episodes_per_class=2, frames=2, seed=9, names=("Not_success", "Success"))
    result = graspcheck.train(dataset, epochs=2, test=str(test_dir), out=str(tmp_path / "run"), **FAST)
    with open(result.run_dir / "split.csv") as f:
        test_rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    assert len(test_rows) == 8 and all(str(test_dir) in r["path"] for r in test_rows)
    assert result.history[1]["test_acc_success"] is not None


def test_augmentation_changes_images_per_sample_and_is_seeded():
    from graspcheck.transforms import augment_batch

    batch = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    batch[1] = batch[0]
    torch.manual_seed(0)
    first = augment_batch(batch, "strong")
    torch.manual_seed(0)
    again = augment_batch(batch, "strong")
    assert first.shape == batch.shape and first.dtype == torch.uint8
    assert torch.equal(first, again)
    assert not torch.equal(first, batch)
    assert not torch.equal(first[0], first[1])  # the same image gets its own random parameters


def test_recorded_augmentation_parameters_replay_exactly_at_any_size():
    from graspcheck.transforms import apply_augmentation, sample_augmentation

    params = sample_augmentation("strong", torch.Generator().manual_seed(3))
    assert params == sample_augmentation("strong", torch.Generator().manual_seed(3))
    assert json.loads(json.dumps(params)) == params  # plain numbers: they go into a manifest
    image = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)
    assert torch.equal(apply_augmentation(image, params), apply_augmentation(image, params))
    assert apply_augmentation(image, params).shape == (3, 48, 64)
    assert apply_augmentation(image, params, (16, 16)).shape == (3, 16, 16)
    identity = dict(params, crop=[0, 0, 1, 1], flip=False, rotation=0, brightness=1, contrast=1, saturation=1, hue=0,
                    grayscale=False, blur_sigma=0, noise=0)
    assert torch.equal(apply_augmentation(image, identity), image)
    flipped = dict(identity, flip=True)
    assert torch.equal(apply_augmentation(image, flipped), image.flip(-1))


def test_resume_is_exact_with_augmentation_and_a_schedule(dataset, tmp_path):
    options = dict(FAST, epochs=3, seed=4, augment="light", optimizer="adamw", schedule="cosine")
    full = graspcheck.train(dataset, out=str(tmp_path / "full"), **options)

    def stop(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        graspcheck.train(dataset, out=str(tmp_path / "cut"), callbacks=[stop], **options)
    resumed = graspcheck.train(resume=tmp_path / "cut")
    a, b = load_file(full.last), load_file(resumed.last)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine reaches zero at the end


def test_batches_prepared_by_worker_processes_train_exactly_like_batches_made_in_process(dataset, tmp_path):
    # One compute thread for both runs: workers take cores from the training step, and another thread
    # count sums floats in another order.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        options = dict(FAST, epochs=2, seed=5, augment="strong")
        in_process = graspcheck.train(dataset, out=str(tmp_path / "w0"), workers=0, **options)
        by_workers = graspcheck.train(dataset, out=str(tmp_path / "w2"), workers=2, **options)
    finally:
        torch.set_num_threads(threads)
    a, b = load_file(in_process.last), load_file(by_workers.last)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "w2" / "config.json").read_text())["workers"] == 2


def test_training_with_workers_leaves_the_thread_count_as_it_was(dataset, tmp_path):
    before = torch.get_num_threads()
    graspcheck.train(dataset, out=str(tmp_path / "run"), workers=1, **dict(FAST, epochs=1, augment="light"))
    assert torch.get_num_threads() == before


def test_training_batches_are_augmented_per_batch_seed_and_in_order():
    from graspcheck.data import training_batches

    pixels = torch.randint(0, 256, (10, 16, 16, 3), dtype=torch.uint8)
    batches = [torch.tensor([3, 1, 4]), torch.tensor([0, 9]), torch.tensor([5, 2, 6])]
    plain = list(training_batches(pixels, batches, "none", seed=0, workers=2))
    assert all(torch.equal(got, pixels[batch]) for got, batch in zip(plain, batches))
    augmented = [list(training_batches(pixels, batches, "strong", seed=s, workers=w)) for s, w in ((0, 0), (0, 2), (1, 0))]
    assert all(torch.equal(x, y) for x, y in zip(augmented[0], augmented[1]))  # any number of workers
    assert not torch.equal(augmented[0][0], augmented[2][0])  # another seed, other augmentations
    assert [len(b) for b in augmented[0]] == [3, 2, 3] and not torch.equal(augmented[0][0], pixels[batches[0]])


def test_recipes_set_defaults_and_given_options_win():
    default = graspcheck.TrainConfig.from_recipe("data")
    assert (default.model, default.pretrained, default.optimizer) == ("efficientnet_lite0", True, "adamw")
    seed = graspcheck.TrainConfig.from_recipe("data", recipe="seed")
    assert (seed.model, seed.img_size, seed.epochs, seed.lr, seed.schedule, seed.augment) == ("seednet", 224, 10, 0.001, "constant", "none")
    assert graspcheck.TrainConfig.from_recipe("data", recipe="seed", img_size=64, lr=0.01).img_size == 64
    with pytest.raises(graspcheck.GraspcheckError, match="unknown training option"):
        graspcheck.TrainConfig.from_recipe("data", learning_rate=0.1)


def test_cli_train_without_options_uses_the_default_recipe(dataset, tmp_path):
    from test_predict_evaluate import run_cli

    result = run_cli("train", dataset, "--epochs", "1", "--img-size", "32", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    default = graspcheck.TrainConfig.from_recipe("data")
    assert (config["recipe"], config["model"], config["pretrained"], config["lr"]) == ("default", default.model, True, default.lr)
    model = graspcheck.load(tmp_path / "run")
    assert model.info.model == default.model and model.info.preprocess.mean == pretrained_config(default.model).mean


def test_cli_keeps_the_values_of_the_recipe_it_is_given(dataset, tmp_path):
    from test_predict_evaluate import run_cli

    result = run_cli("train", dataset, "--recipe", "seed", "--epochs", "1", "--img-size", "32", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    seed = graspcheck.TrainConfig.from_recipe("data", recipe="seed")
    for option in ("model", "optimizer", "lr", "schedule", "augment", "pretrained", "label_smoothing", "weight_decay"):
        assert config[option] == getattr(seed, option), option


def test_fine_tuning_a_pretrained_model_beats_the_same_steps_from_random_init(dataset, tmp_path):
    runs = {pretrained: graspcheck.train(dataset, epochs=3, img_size=64, pretrained=pretrained, seed=0, out=str(tmp_path / str(pretrained)))
            for pretrained in (True, False)}
    # Over the whole (3-epoch) curve and on the held-out test split: the last epoch's 16 validation images alone
    # let a diverging run from random init win or tie by luck with some seeds.
    def mean_val_loss(result):
        return sum(row["val_loss"] for row in result.history) / len(result.history)

    assert mean_val_loss(runs[True]) < mean_val_loss(runs[False])
    assert runs[True].evaluation.balanced_accuracy > runs[False].evaluation.balanced_accuracy


def test_a_frozen_backbone_keeps_its_weights_and_statistics(dataset, tmp_path):
    from graspcheck.models import create_model

    result = graspcheck.train(dataset, epochs=1, img_size=64, freeze_backbone=True, lr=0.01, out=str(tmp_path / "run"))
    trained = load_file(result.last)
    start = create_model("efficientnet_lite0", pretrained=True).state_dict()
    assert all(torch.equal(trained[k], start[k]) for k in start if not k.startswith("classifier."))
    assert not torch.equal(trained["classifier.weight"], start["classifier.weight"])


def test_warmup_rises_then_cosine_falls_to_zero():
    from graspcheck.training import lr_factor

    factor = lr_factor("cosine", total_steps=100, warmup_steps=10)
    rising = [factor(step) for step in range(10)]
    assert rising == sorted(rising) and rising[0] < 0.2 and factor(10) == 1.0
    assert factor(55) == pytest.approx(0.5) and factor(100) == pytest.approx(0.0)


def test_torchrun_trains_on_two_processes_and_only_rank_0_writes(trained, dataset, tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "graspcheck", "train", str(dataset),
               "--recipe", "seed", "--img-size", "32", "--lr", "0.01", "--batch-size", "16", "--epochs", "6", "--seed", "2", "--out", "run"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes" in result.stderr and result.stdout.count("done:") == 1  # one process speaks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing else was written by rank 1
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    # Same recipe as the single-process `trained` run (there: 16 images a step, here 2 x 16): same result within noise.
    single = trained.history[-1]["val_balanced_acc"]
    assert float(rows[-1]["val_balanced_acc"]) >= 0.9 and abs(float(rows[-1]["val_balanced_acc"]) - single) <= 0.1
    assert graspcheck.load(tmp_path / "run").predict(sorted((dataset / "success").iterdir())[:2])  # a usable checkpoint


def test_compiled_training_learns_and_saves_plain_checkpoints(dataset, tmp_path):
    result = graspcheck.train(dataset, epochs=4, seed=2, compile=True, out=str(tmp_path / "run"), **FAST)
    assert result.history[-1]["val_balanced_acc"] >= 0.9
    assert not any("_orig_mod" in key for key in load_file(result.best))  # loadable without torch.compile
    assert graspcheck.load(result.best).predict(sorted((dataset / "success").iterdir())[:1])[0].label in ("success", "not_success")


def test_float16_mixed_precision_scales_the_loss_and_learns():
    # GPUs without bfloat16 (T4, V100) train in float16 with a loss scaler; the same code path runs here on the CPU.
    from graspcheck.models import create_model
    from graspcheck.training import SpeedOptions, train_step

    torch.manual_seed(0)
    speed = SpeedOptions(channels_last=True, autocast=torch.float16)
    scaler = speed.grad_scaler(torch.device("cpu"))
    assert scaler is not None and SpeedOptions(autocast=torch.bfloat16).grad_scaler(torch.device("cpu")) is None
    network = create_model("seednet", 2, (16, 16)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(16, 3, 16, 16)
    y = (x[:, 0].mean((1, 2)) > 0).long()  # a learnable rule
    x[y == 1] += 0.5
    losses = [train_step(network, optimizer, torch.nn.CrossEntropyLoss(), x, y, speed, scaler)[1].item() for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    assert scaler.get_scale() > 0 and all(torch.isfinite(p).all() for p in network.parameters())
    assert network.block1[0].weight.dtype == torch.float32  # weights stay float32


def test_the_best_checkpoint_has_the_lowest_validation_loss_not_a_one_image_accuracy_lead():
    from graspcheck.runs import best_checkpoint_key

    epoch3 = {"val_loss": 0.2361, "val_balanced_acc": 0.990}
    epoch4 = {"val_loss": 0.2353, "val_balanced_acc": 0.987}
    assert best_checkpoint_key(epoch4, 4) > best_checkpoint_key(epoch3, 3)
    tie = {"val_loss": 0.2353, "val_balanced_acc": 0.990}
    assert best_checkpoint_key(tie, 5) > best_checkpoint_key(epoch4, 4)
    assert best_checkpoint_key({}, 2) > best_checkpoint_key({}, 1)  # no validation split: the later epoch


def test_the_augment_choices_are_the_augmentation_presets():
    from graspcheck.config import AUGMENT_CHOICES
    from graspcheck.transforms import AUGMENT_RANGES

    assert AUGMENT_CHOICES == ("none", *AUGMENT_RANGES)
