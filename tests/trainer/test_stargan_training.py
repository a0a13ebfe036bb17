import json

import pytest
import torch

from tests.conftest import TINY_CONFIGS as TINY
from tests.trainer.resume_check import assert_same_state
from trainer import cli
from trainer.registry import get_architecture
from trainer.training.checkpoint import load_checkpoint
from trainer.training.loop import Run, TrainOptions


def tiny_run(out, steps, resume=False, eval_every=0, **config):
    values = {**TINY["stargan"], **config}
    options = TrainOptions(data="shapes:64", steps=steps, out=str(out), seed=7, log_every=5, sample_every=0,
                           checkpoint_every=10, eval_every=eval_every, resume=resume, progress=False)
    return Run("stargan", get_architecture("stargan").make_config(values), options)




def test_training_moves_both_networks_logs_terms_and_samples(tmp_path):
    run = tiny_run(tmp_path, steps=10, num_iters=10, num_iters_decay=5)
    g_before = {k: v.clone() for k, v in run.algorithm.generator.state_dict().items()}
    d_before = {k: v.clone() for k, v in run.algorithm.discriminator.state_dict().items()}
    run.train()
    assert any(not torch.equal(v, g_before[k]) for k, v in run.algorithm.generator.state_dict().items())
    assert any(not torch.equal(v, d_before[k]) for k, v in run.algorithm.discriminator.state_dict().items())
    running = [m.running_mean for m in run.algorithm.generator.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert any(r.abs().sum() > 0 for r in running), "InstanceNorm running statistics were not updated"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10]
    for key in ("loss_d", "d_real", "d_fake", "d_cls", "gp", "loss_g", "g_fake", "g_cls", "g_rec"):
        assert all(torch.isfinite(torch.tensor(r[key])) for r in records), key
    assert records[0]["lr_g"] == 1e-4 and records[1]["lr_g"] == 0.0  # linear decay reaches exactly zero
    assert run.algorithm.opt_g.param_groups[0]["lr"] == 1e-4 * 1 / 5  # the last step's lr
    grid = run.algorithm.sample()
    # 8 rows (fixed images) x 4 columns (input + three colours) of 16x16 tiles with 2-pixel gaps
    assert grid.shape == (1, 3, 8 * 18 - 2, 4 * 18 - 2) and grid.abs().max() <= 1
    assert (tmp_path / "samples" / "step_00000010.png").is_file()
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["config"]["attributes"] == "colour_red,colour_green,colour_blue"
    assert checkpoint["config"]["exclusive_groups"] == "colour_red|colour_green|colour_blue"
    assert checkpoint["translation"]["iteration"] == 10


def test_resume_continues_bit_for_bit_and_evaluation_does_not_disturb_training(tmp_path):
    tiny_run(tmp_path / "straight", steps=20, eval_every=5).train()
    tiny_run(tmp_path / "split", steps=10).train()
    tiny_run(tmp_path / "split", steps=20, resume=True).train()
    assert_same_state(load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split"))

    def losses(path):
        records = map(json.loads, (path / "metrics.jsonl").read_text().splitlines())
        return [(r["loss_d"], r.get("loss_g")) for r in records if "loss_d" in r]

    assert losses(tmp_path / "straight") == losses(tmp_path / "split")


def test_evaluation_reports_accuracy_and_reconstruction_deterministically(tmp_path):
    run = tiny_run(tmp_path, steps=2)
    run.train()
    first = run.algorithm.evaluate(run.dataset)
    again = run.algorithm.evaluate(run.dataset)
    assert first == again and len(run.algorithm.classifier_cache) == 1
    assert 0.0 <= first["target_accuracy"] <= 1.0 and first["reconstruction_l1"] > 0
    assert first["held_out_images"] == 24
    # each held-out image is translated to each colour it does not have (images of other colours: all three)
    assert 2 * 24 <= first["translations"] <= 3 * 24
    assert set(first["per_attribute"]) <= {"colour_red", "colour_green", "colour_blue"}
    assert run.algorithm.generator.training  # evaluation put G back into training mode


def test_cli_trains_stargan_and_evaluation_command_reports(tmp_path, capsys):
    from trainer.evaluation import stargan_eval

    out = tmp_path / "run"
    code = cli.main(["stargan", "--data", "shapes:32", "--image-size", "16", "--g-conv-dim", "8", "--d-conv-dim", "8",
                     "--g-repeat-num", "1", "--batch-size", "8", "--steps", "3", "--out", str(out), "--no-progress",
                     "--attributes", "colour_red,colour_green", "--classifier-steps", "5"])
    assert code == 0
    capsys.readouterr()
    png = tmp_path / "demo.png"
    code = stargan_eval.main([str(out), "--images", "8", "--png", str(png), "--png-images", "1"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"target_accuracy", "reconstruction_l1", "real_accuracy", "per_attribute"} <= set(report)
    assert report["held_out_images"] == 8
    assert (out / "eval" / "attribute_classifier.pt").is_file() and png.is_file()
    assert stargan_eval.main([str(out), "--images", "8"]) == 0  # second time: cached classifier
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again == {k: v for k, v in report.items() if k != "png"}
    code = cli.main(["stargan", "--data", "shapes:8", "--image-size", "16", "--attributes", "colour_purple",
                     "--steps", "1", "--out", str(tmp_path / "bad")])
    assert code == 2 and "colour_purple" in capsys.readouterr().err


def test_cli_help_documents_the_paper_defaults_and_data_specs(capsys):
    import pytest

    with pytest.raises(SystemExit):
        cli.main(["stargan", "--help"])
    text = capsys.readouterr().out
    for flag in ("--attributes", "--exclusive-groups", "--lambda-cls", "--lambda-rec", "--lambda-gp", "--n-critic",
                 "--num-iters-decay", "--g-conv-dim", "--d-repeat-num"):
        assert flag in text
    assert "celeba:ROOT" in text and "csv:IMAGES_DIR,ATTRS.csv" in text and "(paper: 10)" in text


def test_shape_kept_passes_an_identity_and_fails_a_generator_that_blurs_shapes_away():
    """The attribute classifier judges only colours; shape_kept is what catches a translation to a blob."""
    from trainer.data.labelled import build_labelled_dataset
    from trainer.evaluation.translation import fit_classifier, load_images, shape_judge, translation_metrics
    from trainer.registry import get_architecture

    config = get_architecture("stargan").make_config({"image_size": 16, "attributes": "colour_red,colour_green"})
    dataset = build_labelled_dataset("shapes:64", config, 0)
    held_out = dataset.held_out(48)
    images, labels = load_images(held_out, len(held_out))
    classifier, judge = fit_classifier(dataset, 5), shape_judge(held_out)
    assert judge is not None

    def identity(x, c):
        return x

    def blur(x, c):
        return torch.nn.functional.avg_pool2d(x, 9, stride=1, padding=4, count_include_pad=False)

    for generator in (identity, blur):
        generator.eval = generator.train = lambda *a, g=generator: g  # what translation_metrics calls
        generator.training = False
    kept = translation_metrics(identity, classifier, images, labels, dataset.attributes, dataset.exclusive_groups,
                               torch.device("cpu"), judge)
    lost = translation_metrics(blur, classifier, images, labels, dataset.attributes, dataset.exclusive_groups,
                               torch.device("cpu"), judge)
    assert kept["shape_kept"] == pytest.approx(kept["real_shape_accuracy"], abs=0.05)
    assert kept["shape_kept"] > 0.7 and lost["shape_kept"] < kept["shape_kept"] - 0.2
