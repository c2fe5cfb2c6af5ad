"""The evaluation: CSCDefense, its BPDA gradient, the ART adapter, and small seeded runs."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

from evaluation.classifier import SmallCNN, to_tensor
from evaluation.defense import CSCDefense
from evaluation.flow import evaluate
from evaluation.options import EPSILONS, SWEEP, EvaluateOptions
from evaluation.table import eps_label
from evaluation.tasks import TEXTURES, digits, load_task, scenes
from flows.reconstruct import StoreTarget, reconstruct_dataset
from pipeline.basis import DEFAULT_BASIS, STRATIFIED_SET, open_bases
from pipeline.config import EvaluateConfig, StoreConfig
from pipeline.datasets import Dataset
from pipeline.options import CSCOptions
from pipeline.store import read_images
from pipeline.stratified import reconstruct_by_cluster


@pytest.fixture(scope="module")
def patches() -> tuple[np.ndarray, np.ndarray]:
    """Ten 32x32 test patches of the scenes task (one per photograph) and their labels."""
    task = scenes(train_per_class=1, test_per_class=1)
    return task.test_images, task.test_labels


def test_textures_task_leaves_texture_as_the_only_cue_and_no_test_patch_in_training():
    task = load_task("textures", test_images=90, train_images=180)
    assert task.classes == list(TEXTURES) and task.test_images.shape == (90, 32, 32, 3)
    assert task.train_images.shape == (180, 32, 32, 3) and task.train_images.dtype == np.float32
    assert np.bincount(task.test_labels).tolist() == [10] * 9
    grey = task.test_images[..., 0]
    assert np.array_equal(task.test_images[..., 1], grey)  # no colour
    for images, labels in ((task.train_images, task.train_labels), (grey, task.test_labels)):
        means = images.reshape(len(images), -1).mean(1)
        deviations = images.reshape(len(images), -1).std(1)
        for label in range(9):  # every class: the same brightness and contrast
            assert abs(means[labels == label].mean() - 0.5) < 0.01
            assert abs(deviations[labels == label].mean() - 0.1) < 0.01
    # Test patches come from the right 40 % of each photograph: none equals a training patch.
    train = {patch.tobytes() for patch in task.train_images}
    assert not any(patch.tobytes() in train for patch in task.test_images)
    again = load_task("textures", test_images=90, train_images=180)
    assert np.array_equal(again.test_images, task.test_images)  # seeded
    # None of the photographs trained the shipped bases (colour photographs only).
    from pipeline.photos import photographs

    assert not set(TEXTURES) & set(photographs())


def test_csc_defense_equals_the_pipelines_reconstruction(client, patches, tmp_path):
    images, _ = patches
    bases = open_bases(STRATIFIED_SET)
    names = [f"patch{i}" for i in range(len(images))]
    dataset = Dataset("patches", names, list(images), image_size=32, fit="none")
    reconstruct_dataset(client, dataset, bases,
                        StoreTarget(tmp_path / "p.zarr", StoreConfig(dtype="float32")),
                        options=CSCOptions(), progress=False)
    group = zarr.open_group(tmp_path / "p.zarr", mode="r")

    out = CSCDefense(bases)(to_tensor(images))
    assert out.shape == (10, 3, 32, 32) and out.dtype == torch.float32
    np.testing.assert_allclose(out.permute(0, 2, 3, 1).numpy(), read_images(group), atol=1e-4)
    _, _, clusters = reconstruct_by_cluster(images, bases)
    np.testing.assert_array_equal(clusters, group["cluster"][:])
    assert len(np.unique(clusters)) > 1  # the patches really use several dictionaries


def test_bpda_gradient_is_the_classifiers_gradient_at_the_reconstruction(patches):
    images, labels = patches
    torch.manual_seed(0)
    model = SmallCNN().eval()
    defense = CSCDefense(DEFAULT_BASIS)
    x = to_tensor(images).requires_grad_(True)
    reconstruction = defense(x)
    loss = torch.nn.functional.cross_entropy(model(reconstruction), torch.from_numpy(labels))
    grad, = torch.autograd.grad(loss, x)
    assert grad.shape == x.shape and grad.abs().sum() > 0

    at_reconstruction = reconstruction.detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(at_reconstruction), torch.from_numpy(labels))
    expected, = torch.autograd.grad(loss, at_reconstruction)
    torch.testing.assert_close(grad, expected)  # identity backward: BPDA
    assert not CSCDefense(DEFAULT_BASIS, bpda=False)(x).requires_grad


def test_exact_gradient_goes_through_the_unrolled_solve_of_each_cluster(patches):
    """exact=True: the same reconstruction, each patch with its cluster's dictionary, and a
    gradient that is the unrolled solver's, not BPDA's identity."""
    images, labels = patches[0][:5], patches[1][:5]
    torch.manual_seed(0)
    model = SmallCNN().eval()
    bases = open_bases(STRATIFIED_SET)
    _, _, clusters = reconstruct_by_cluster(images, bases)
    assert len(np.unique(clusters)) > 1  # several dictionaries in one call
    x = to_tensor(images).requires_grad_(True)
    reconstruction = CSCDefense(bases, exact=True)(x)
    torch.testing.assert_close(reconstruction.detach(), CSCDefense(bases)(to_tensor(images)),
                               atol=1e-4, rtol=0)
    y = torch.from_numpy(labels)
    loss = torch.nn.functional.cross_entropy(model(reconstruction), y, reduction="sum")
    exact, = torch.autograd.grad(loss, x)
    at_reconstruction = reconstruction.detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(at_reconstruction), y, reduction="sum")
    bpda, = torch.autograd.grad(loss, at_reconstruction)
    cosine = torch.nn.functional.cosine_similarity(exact.flatten(1), bpda.flatten(1), dim=1)
    assert torch.all(cosine < 0.99) and torch.all(cosine > -0.99)  # related, not the same


def test_art_adapter_defends_inside_pytorch_classifier_and_an_art_attack_uses_it(patches):
    from art.attacks.evasion import FastGradientMethod
    from art.estimators.classification import PyTorchClassifier

    from evaluation.art_adapter import CSCPreprocessor

    images, labels = patches
    torch.manual_seed(0)
    model = SmallCNN().eval()
    defended = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(),
                                 input_shape=(3, 32, 32), nb_classes=10, clip_values=(0, 1),
                                 preprocessing_defences=[CSCPreprocessor(DEFAULT_BASIS)])
    x = to_tensor(images).numpy()
    expected = model(CSCDefense(DEFAULT_BASIS)(torch.from_numpy(x))).argmax(1).numpy()
    np.testing.assert_array_equal(defended.predict(x).argmax(1), expected)

    eps = 8 / 255
    adversarial = FastGradientMethod(defended, eps=eps).generate(x=x, y=labels)
    assert adversarial.shape == x.shape
    delta = np.abs(adversarial - x)
    assert delta.max() <= eps + 1e-6 and (delta > eps / 2).mean() > 0.5  # a real gradient step


SMALL = {"scenes": dict(train_per_class=200, test_per_class=15),
         "digits": dict(test_size=100)}


@pytest.fixture(scope="module")
def workers():
    """Two worker processes, as the command starts them."""
    from pipeline.runtime import connect, disconnect

    client = connect(n_workers=2, dashboard_address="127.0.0.1:0")
    yield client
    disconnect(client)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["scenes", "digits"])
def test_small_seeded_run_of_each_task(workers, name, tmp_path):
    from evaluation.outputs import sanity_checks, write_outputs

    task = (scenes if name == "scenes" else digits)(**SMALL[name])
    # Smaller than the command's defaults: 150 or 100 test images, one basis set, 200 to
    # retrain on, the adaptive attacks on 20 images with 20 steps x 2 restarts, the sweep
    # with 10 steps at three of its budgets (the largest among them).
    settings = EvaluateConfig(pgd_steps=10, epochs=10, retrain_images=200, bpda_images=20,
                              bpda_steps=20, bpda_restarts=2, apgd_steps=5, target_classes=1,
                              square_queries=20, sweep_steps=10, sweep_images=20,
                              exact_steps=2)
    options = EvaluateOptions(settings, CSCOptions(), EPSILONS[name], SWEEP[name][1::2])
    bases = {"CSC per-cluster": open_bases(STRATIFIED_SET)}
    result = evaluate(workers, task, bases, out=tmp_path, options=options, progress=False)
    label = "8/255" if name == "scenes" else "0.1"
    main = f"PGD {label}"

    def accuracy(row, column):
        return float(np.mean(result.correct[row, column]))

    assert accuracy("none", "clean") > (0.7 if name == "scenes" else 0.9)
    assert accuracy("none", "clean") - accuracy("none", main) >= 0.3
    for row in bases:
        assert accuracy(row, main) - accuracy("none", main) >= 0.05
        assert abs(accuracy(row, "clean") - accuracy("none", "clean")) <= 0.06
    rows, columns = result.layout(options)
    assert rows == ["none", "transfer control", "CSC per-cluster",
                    "CSC per-cluster, retrained", "JPEG q75", "median 3x3", "bit depth 3", "TV"]
    assert columns[:2] == ["clean", "FGSM " + EPSILONS_LABELS[name][0]]
    assert {c.split()[0] for c in columns} == {"clean", "FGSM", "PGD", "APGD", "DeepFool",
                                               "BPDA-PGD", "BPDA+APGD", "BPDA+AutoAttack",
                                               "exact-PGD", "worst"}

    # The adaptive attacks: on every row but the transfer control, on the same 20 images.
    adaptive = [row for row in rows if row != "transfer control"]
    assert sorted(result.fooled_at) == sorted(adaptive)
    assert len(result.adaptive_images) == 20
    assert len(set(task.test_labels[result.adaptive_images])) >= 6  # a draw across classes
    oblivious_at_main = [c for c in columns if c.endswith(" " + label)
                         and c.split()[0] in ("FGSM", "PGD", "APGD")]
    for row in adaptive:
        bpda, both, worst = (result.correct[row, f"{kind} {label}"]
                             for kind in ("BPDA-PGD", "BPDA+APGD", "worst case"))
        autoattack = result.correct[row, f"BPDA+AutoAttack {label}"]
        assert np.all(both <= bpda) and np.all(autoattack <= both)  # each adds attacks
        assert np.all(worst <= autoattack)
        assert list(result.standing[row]) == ["APGD", "APGD-T", "FAB-T", "Square"]
        if row.startswith("CSC"):  # and on CSC rows, PGD with the unrolled solver's gradient
            assert np.all(worst <= result.correct[row, f"exact-PGD {label}"])
            cosine = result.gradient_cosine[row]
            assert cosine.shape == (20,) and np.all(np.abs(cosine) <= 1.0 + 1e-6)
        else:
            assert (row, f"exact-PGD {label}") not in result.correct
        for column in oblivious_at_main:  # robust means no attack at this budget fooled it
            assert np.all(worst <= result.correct[row, column][result.adaptive_images])
    # Every budget of the sweep a worst case: the sweep's BPDA-PGD and PGD at that budget
    # (made on the undefended classifier), per image, on the sweep's images.
    assert len(result.sweep_images) == 20
    for row in adaptive:
        for eps in options.sweep:
            label = eps_label(eps)
            worst = result.correct[row, f"worst case {label} sweep"]
            assert np.all(worst <= result.correct[row, f"BPDA-PGD {label} sweep"])
            assert np.all(worst <= result.correct[row, f"PGD {label}"][result.sweep_images])
    checks = sanity_checks(result, options, rows)
    not_weaker = [c for c in checks if "(same " in c.text]
    largest = [c for c in checks if "at " + SWEEP_LABELS[name] in c.text]
    csc_rows = [row for row in adaptive if row.startswith("CSC")]
    assert len(not_weaker) == (2 + len(options.sweep)) * len(adaptive) + len(csc_rows)
    assert len(largest) == len(adaptive)
    assert len([c for c in checks if "cosine between the exact and the BPDA" in c.text]) \
        == len(csc_rows)
    assert len([c for c in checks if "the gradient-free Square fooled" in c.text]) \
        == len(adaptive)
    for check in largest:  # every row, defended or not, is broken at the largest budget
        assert check.ok, check.text
    for check in not_weaker:  # the gradient through CSC is the intended one: at the main
        if check.text.startswith("CSC") and "sweep" not in check.text \
                and "exact" not in check.text:  # budget no weaker
            assert check.ok, check.text  # than the transferred attack

    write_outputs(task, result, options, tmp_path, seconds=1.0, bases={})
    report = (tmp_path / "results.md").read_text()
    for text in rows + columns + ["## Sanity checks", "## Verdict"]:
        assert text in report
    assert "sanity checks passed" in report or "sanity checks failed" in report
    for check in checks:  # a failed check is printed as a warning, not dropped
        assert f"{'ok' if check.ok else 'WARNING'}: {check.text}" in report
    per_image = json.loads((tmp_path / "correct.json").read_text())
    assert per_image["adaptive_images"] == np.asarray(result.adaptive_images).tolist()
    assert per_image["sweep_images"] == np.asarray(result.sweep_images).tolist()
    for row in rows:  # every cell, image by image
        for column, values in per_image["correct"][row].items():
            assert values == result.correct[row, column].astype(int).tolist()
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    oblivious = len([c for c in columns if c.split()[0] not in (
        "BPDA-PGD", "BPDA+APGD", "BPDA+AutoAttack", "exact-PGD", "worst")])
    assert len(csv_lines) == (1 + 8 * oblivious + 7 * (len(columns) - oblivious - 1)
                              + len(csc_rows))  # exact-PGD: the CSC rows only
    for plot in ("accuracy_vs_eps.png", "adaptive_vs_eps.png", "adaptive_convergence.png",
                 "examples.png", "lowpass_energy.png"):
        with Image.open(tmp_path / plot) as image:
            pixels = np.asarray(image.convert("L"))
        assert pixels.shape[0] > 200 and pixels.std() > 10  # drawn, not blank


EPSILONS_LABELS = {"scenes": ["4/255"], "digits": ["0.05"]}
SWEEP_LABELS = {"scenes": "64/255", "digits": "0.4"}


@pytest.mark.slow
def test_your_own_data_and_torchscript_classifier(tmp_path, capsys):
    from evaluation.classifier import train_classifier
    from pipeline.evaluate import main
    from pipeline.photos import sample

    photos = sample()
    for label, name in enumerate(("cups", "cats")):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(photos.items[label * 200 + i]).save(tmp_path / "data" / name /
                                                                f"{i}.png")
    (tmp_path / "mine.yaml").write_text(
        f"dataset:\n  source: folder\n  path: {tmp_path / 'data'}\n  image_size: 32\n"
        "  fit: resize\n")
    task_images = np.stack([np.asarray(Image.open(p).resize((32, 32)), np.float32) / 255
                            for p in sorted((tmp_path / "data").rglob("*.png"))])
    model = train_classifier(task_images, np.repeat([0, 1], 6), n_classes=2, epochs=2)
    torch.jit.script(model).save(str(tmp_path / "model.pt"))

    common = ["--out", str(tmp_path / "out"), "--test-images", "8", "--pgd-steps", "2",
              "--bpda-steps", "1", "--set", "evaluate.bpda_restarts=1", "--set",
              "evaluate.apgd_steps=2", "--set", "evaluate.sweep_steps=1", "--set",
              "evaluate.exact_steps=1", "--set", "evaluate.square_queries=20", "--workers", "2",
              "--dashboard-address", "127.0.0.1:0"]
    assert main([str(tmp_path / "mine.yaml"), *common]) == 2
    assert "evaluating your own data needs your classifier" in capsys.readouterr().err
    assert main([str(tmp_path / "mine.yaml"), "--classifier", "nowhere.pt", *common]) == 2
    assert "nowhere.pt: no such file" in capsys.readouterr().err

    mine = [str(tmp_path / "mine.yaml"), "--classifier", str(tmp_path / "model.pt"), *common]
    assert main(mine) == 0
    table = (tmp_path / "out" / "results.md").read_text()
    capsys.readouterr()
    assert main(mine) == 0  # the same attacks again: the reconstructions are reused
    # 8 test images x 12 columns (clean, FGSM x 3, PGD at the 6 budgets of the sweep, APGD,
    # DeepFool), for each of the two CSC rows
    assert capsys.readouterr().err.count("resuming: 96 of 96 images already done") == 2
    assert "| none |" in table and "| CSC per-cluster |" in table and "| TV |" in table
    assert "retrained" not in table and "transfer control" not in table
    assert "n = 8 test images per cell" in table


def test_classifier_files_load_as_exported_or_torchscript(tmp_path):
    from evaluation.classifier import load_classifier

    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.rand(2, 3, 32, 32)
    torch.export.save(torch.export.export(model, (x,)), str(tmp_path / "model.pt2"))
    with pytest.warns(DeprecationWarning):
        torch.jit.script(model).save(str(tmp_path / "model.pt"))
    for name in ("model.pt2", "model.pt"):
        loaded = load_classifier(str(tmp_path / name))
        # Sent to workers as its archive's bytes: the file need not exist there.
        copied = pickle.loads(pickle.dumps(loaded))
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x))
            torch.testing.assert_close(copied(x), model(x))
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pt2: not an exported classifier"):
        load_classifier(str(tmp_path / "junk.pt2"))
    with pytest.raises(ValueError, match="nosuchmodule:build: cannot build the classifier"):
        load_classifier("nosuchmodule:build")
