"""Tests of klhuber.detection.synthetic, klhuber.detection.data and klhuber.detection.evaluate
(COCOeval part).  No model is trained here; everything runs in a few seconds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")
from PIL import Image  # noqa: E402

from klhuber.detection import data as dd  # noqa: E402
from klhuber.detection import synthetic as sy  # noqa: E402
from klhuber.detection.evaluate import IOU_THRESHOLDS, coco_metrics  # noqa: E402

TINY = {"image_size": 48, "num_train": 6, "num_val": 4, "max_objects": 3, "min_box": 0.2,
        "max_box": 0.6, "seed": 3}


# ------------------------------------------------------------------------------- synthetic


def test_generator_is_deterministic_and_noise_touches_train_labels_only(tmp_path):
    a = sy.generate_shapes(tmp_path / "a", noise_scale=0.1, **TINY)
    b = sy.generate_shapes(tmp_path / "b", noise_scale=0.1, **TINY)
    c = sy.generate_shapes(tmp_path / "c", noise_scale=0.0, **TINY)
    for key in ("train_annotations", "val_annotations", "train_clean_annotations"):
        assert open(a["files"][key], "rb").read() == open(b["files"][key], "rb").read()
    for name in sorted((tmp_path / "a" / "train").iterdir()):
        assert name.read_bytes() == (tmp_path / "b" / "train" / name.name).read_bytes()
        assert name.read_bytes() == (tmp_path / "c" / "train" / name.name).read_bytes()
    val_a = json.load(open(a["files"]["val_annotations"]))
    val_c = json.load(open(c["files"]["val_annotations"]))
    assert val_a["annotations"] == val_c["annotations"]  # validation labels stay exact
    noisy = json.load(open(a["files"]["train_annotations"]))["annotations"]
    clean = json.load(open(a["files"]["train_clean_annotations"]))["annotations"]
    clean_c = json.load(open(c["files"]["train_annotations"]))["annotations"]
    assert clean == clean_c  # noise 0 -> the exact boxes
    assert len(noisy) == len(clean) > 0
    assert any(n["bbox"] != k["bbox"] for n, k in zip(noisy, clean))
    # Calling again with the same settings is a no-op (recipe recorded).
    again = sy.generate_shapes(tmp_path / "a", noise_scale=0.1, **TINY)
    assert again["files"] == a["files"]


def test_boxes_are_exact_extents_of_the_drawn_shapes():
    spec = sy.ShapesSpec(clutter=0, **TINY)
    for index in range(4):
        image, objects = sy.draw_image(spec, "val", index)
        assert image.size == (48, 48)
        assert 1 <= len(objects) <= 3
        for obj in objects:
            x0, y0, x1, y1 = obj["bbox"]
            assert obj["category"] in sy.CLASSES
            assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
            assert x0 == int(x0) and x1 == int(x1)  # pixel edges


def test_edge_noise_has_the_requested_scale():
    rng = np.random.default_rng(0)
    box = [100.0, 200.0, 140.0, 260.0]  # w = 40, h = 60
    offsets = np.array([np.subtract(sy.add_box_noise(box, 0.05, rng), box)
                        for _ in range(4000)])
    # Laplace(b): E|e| = b; per-edge scale is 0.05 * w for x edges, 0.05 * h for y edges.
    mean_abs = np.abs(offsets).mean(axis=0)
    np.testing.assert_allclose(mean_abs, [2.0, 3.0, 2.0, 3.0], rtol=0.08)
    gauss = np.array([np.subtract(sy.add_box_noise(box, 0.05, rng, noise="gaussian"), box)
                      for _ in range(4000)])
    np.testing.assert_allclose(gauss.std(axis=0), [2.0, 3.0, 2.0, 3.0], rtol=0.08)
    scales = sy.equivalent_laplace_scales(0.1)
    assert math.isclose(scales["x"], 0.1 / math.sqrt(2))
    assert math.isclose(scales["w"], 0.1 * math.sqrt(2))


def test_the_best_huber_threshold_for_the_centre_is_interior_for_laplace_edges():
    # independent reference: the centre's density by numerical convolution of the two edges'
    # Laplace densities (not the closed form), V(k) = E[psi_k^2] / P(|z| < k)^2 by quadrature
    from scipy import integrate

    def laplace(e):
        return 0.5 * math.exp(-abs(e))

    def centre(z):  # z = (e0 + e1)/2: density 2 (f * f)(2z)
        t = 2 * z
        return 2 * integrate.quad(lambda e: laplace(e) * laplace(t - e), -40, 40,
                                  points=[0.0, t], limit=200)[0]

    def variance(k):
        inner = integrate.quad(lambda z: z * z * centre(z), 0, k)[0]
        tail = integrate.quad(centre, k, 30)[0]
        return 2 * (inner + k * k * tail) / (1 - 2 * tail) ** 2

    got = sy.centre_noise_huber_threshold(1.0)
    k = got["threshold"]
    assert 0.6 < k < 0.8  # interior: neither L1 (k -> 0) nor L2 (k -> inf)
    assert got["v_min"] == pytest.approx(variance(k), rel=1e-7)
    assert variance(k) < min(variance(k - 0.01), variance(k + 0.01))  # a minimum
    assert got["v_min"] < 0.86 < got["v_l1"] == got["v_l2"] == pytest.approx(variance(25.0))
    # it scales with the edge noise; Gaussian edges give a Gaussian centre (L2 is best)
    assert sy.centre_noise_huber_threshold(0.1)["threshold"] == pytest.approx(
        0.1 * got["threshold"], rel=1e-12)
    assert sy.centre_noise_huber_threshold(0.1, "gaussian")["threshold"] == math.inf
    with pytest.raises(ValueError, match="edge_scale"):
        sy.centre_noise_huber_threshold(-0.1)
    with pytest.raises(ValueError, match="noise"):
        sy.centre_noise_huber_threshold(0.1, "cauchy")


@pytest.mark.parametrize("bad", [{"image_size": 8}, {"noise_scale": -0.1}, {"noise": "cauchy"},
                                 {"min_objects": 3, "max_objects": 2},
                                 {"classes": ("hexagon",)}, {"num_train": 0}])
def test_spec_rejects_bad_settings(bad):
    with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
        sy.ShapesSpec(**bad)


# ------------------------------------------------------------------------------- data


def _write_coco(root, split_dir, ann_name):
    """A 3-image COCO folder: non-contiguous category ids, a crowd box, a degenerate box and an
    image without annotations."""
    (root / split_dir).mkdir(parents=True)
    (root / "annotations").mkdir(exist_ok=True)
    images = []
    for i in range(3):
        Image.new("RGB", (40, 30), (i * 60, 10, 200)).save(root / split_dir / f"{i}.jpg")
        images.append({"id": 10 + i, "file_name": f"{i}.jpg", "width": 40, "height": 30})
    anns = [
        {"id": 1, "image_id": 10, "category_id": 5, "bbox": [2, 3, 10, 8], "area": 80,
         "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 1, "bbox": [20, 5, 15, 20], "area": 300,
         "iscrowd": 1},
        {"id": 3, "image_id": 11, "category_id": 1, "bbox": [5, 5, 0.5, 4], "area": 2,
         "iscrowd": 0},
        {"id": 4, "image_id": 11, "category_id": 1, "bbox": [1, 1, 30, 25], "area": 750,
         "iscrowd": 0},
    ]
    cats = [{"id": 1, "name": "cat"}, {"id": 5, "name": "dog"}]
    (root / "annotations" / ann_name).write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))


@pytest.mark.parametrize("year", ["2017", "2014"])
def test_coco_layouts_and_training_filters(tmp_path, year):
    _write_coco(tmp_path, f"train{year}", f"instances_train{year}.json")
    img_dir, ann_file = dd.coco_split_paths(tmp_path, "train")
    assert img_dir.name == f"train{year}"
    assert dd.coco_split_paths(tmp_path, "train", year) == (img_dir, ann_file)
    with pytest.raises(ValueError, match="no val split"):
        dd.coco_split_paths(tmp_path, "val")

    train = dd.CocoDetection(img_dir, ann_file, train=True)
    assert train.ids == [10, 11]  # image 12 has no annotation
    assert train.num_classes == 3 and train.label_to_cat == {1: 1, 2: 5}
    image, target = train[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    torch.testing.assert_close(target["boxes"], torch.tensor([[2.0, 3.0, 12.0, 11.0]]))
    assert target["labels"].tolist() == [2]  # crowd box dropped
    _, target = train[1]
    assert target["labels"].tolist() == [1, 1]  # thin box (w = 0.5) kept, positive width
    assert (target["boxes"][:, 2] > target["boxes"][:, 0]).all()

    val = dd.CocoDetection(img_dir, ann_file, train=False, cache=True)
    assert val.ids == [10, 11, 12]
    assert val.target(0)["iscrowd"].tolist() == [0, 1]
    images, targets = dd.collate([val[0], val[2]])
    assert len(images) == 2 and targets[1]["boxes"].shape == (0, 4)

    digest = dd.dataset_hash(img_dir, ann_file)
    (img_dir / "0.jpg").write_bytes((img_dir / "1.jpg").read_bytes())
    assert dd.dataset_hash(img_dir, ann_file) != digest
    assert dd.dataset_hash(img_dir, ann_file, images=False) == dd.dataset_hash(
        img_dir, ann_file, images=False)


def test_synthetic_layout_and_skip_sampler(tmp_path):
    sy.generate_shapes(tmp_path, **TINY)
    img_dir, ann_file = dd.coco_split_paths(tmp_path, "val")
    assert img_dir == tmp_path / "val"
    ds = dd.CocoDetection(img_dir, ann_file)
    assert len(ds) == 4 and ds.class_names == list(sy.CLASSES)
    sampler = torch.utils.data.distributed.DistributedSampler(
        ds, num_replicas=1, rank=0, shuffle=True, seed=1)
    order = list(sampler)
    assert list(dd.SkipSampler(sampler, 3)) == order[3:]
    assert len(dd.SkipSampler(sampler, 3)) == 1


# ------------------------------------------------------------------------------- COCOeval


def test_coco_metrics_perfect_shifted_and_empty(tmp_path):
    sy.generate_shapes(tmp_path, **TINY)
    img_dir, ann_file = dd.coco_split_paths(tmp_path, "val")
    ds = dd.CocoDetection(img_dir, ann_file)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"],
                "bbox": a["bbox"], "score": 0.9} for a in ds.coco.dataset["annotations"]]
    m = coco_metrics(ds.coco, perfect)
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0)
    assert m["AP_per_iou"] == pytest.approx([1.0] * len(IOU_THRESHOLDS))
    shifted = [{**d, "bbox": [d["bbox"][0] + 0.25 * d["bbox"][2], *d["bbox"][1:]]}
               for d in perfect]
    s = coco_metrics(ds.coco, shifted)
    assert s["AP50"] == pytest.approx(1.0)  # IoU = 0.6 for every box
    assert s["AP75"] == pytest.approx(0.0) and s["AP"] < 0.5
    assert s["AP_per_iou"][0] == pytest.approx(1.0) and s["AP_per_iou"][-1] == 0.0
    assert coco_metrics(ds.coco, [])["AP"] == 0.0


# ------------------------------------------------------------- data checked at load time (#22)


def _hand_written(root, *, undeclared=False, wrong_size=False):
    """Category ids 1, 3, 90; images of several sizes and modes (L, RGBA, RGB; PNG, JPEG), a
    unicode file name and an image without annotations."""
    (root / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    specs = [("L", (32, 24), "a.png"), ("RGBA", (40, 30), "b.png"), ("RGB", (20, 36), "ü.jpg")]
    images = []
    for i, (mode, size, name) in enumerate(specs):
        Image.new(mode, size).save(root / "val" / name)
        width, height = size
        if wrong_size and i == 1:
            width += 8
        images.append({"id": i + 1, "file_name": name, "width": width, "height": height})
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8], "area": 80,
         "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 90, "bbox": [5, 5, 30, 20], "area": 600,
         "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 7 if undeclared else 3, "bbox": [1, 1, 6, 6],
         "area": 36, "iscrowd": 0},
    ]
    cats = [{"id": 1, "name": "one"}, {"id": 3, "name": "three"}, {"id": 90, "name": "ninety"}]
    ann = root / "annotations" / "instances_val.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}),
                   encoding="utf-8")
    return root / "val", ann


def test_undeclared_category_is_an_error_at_load_time(tmp_path):
    img_dir, ann = _hand_written(tmp_path, undeclared=True)
    with pytest.raises(ValueError, match=r"category_id.*declared categories \[1, 3, 90\]: 7"):
        dd.CocoDetection(img_dir, ann, train=True)


def test_image_sizes_are_checked_against_the_files(tmp_path):
    img_dir, ann = _hand_written(tmp_path, wrong_size=True)
    with pytest.raises(ValueError, match=r"b\.png\) is 40x30 but declared 48x30.*--fix-sizes"):
        dd.CocoDetection(img_dir, ann)
    ds = dd.CocoDetection(img_dir, ann, fix_sizes=True)
    assert ds.coco.imgs[2]["width"] == 40
    image, target = ds[1]
    assert image.shape == (3, 30, 40)
    assert float(target["boxes"][:, 2].max()) <= 40  # clipped to the real image
    good_dir, good_ann = _hand_written(tmp_path / "good")
    ds = dd.CocoDetection(good_dir, good_ann, train=False)
    assert ds.label_to_cat == {1: 1, 2: 3, 3: 90} and len(ds) == 3
    assert [ds[i][0].shape[0] for i in range(3)] == [3, 3, 3]  # L, RGBA -> RGB


def test_eval_checks_the_checkpoints_label_mapping(tmp_path):
    from klhuber.detection.evaluate import check_label_mapping

    img_dir, ann = _hand_written(tmp_path)
    ds = dd.CocoDetection(img_dir, ann)
    same = {"label_to_cat": {"1": 1, "2": 3, "3": 90}, "class_names": ["one", "three", "ninety"]}
    check_label_mapping(ds, same)
    check_label_mapping(ds, {})  # an old checkpoint without a mapping is not checked
    with pytest.raises(ValueError, match=r"category ids \[1, 3, 90\].*trained on \[1, 3, 91\]"):
        check_label_mapping(ds, {**same, "label_to_cat": {"1": 1, "2": 3, "3": 91}})
    with pytest.raises(ValueError, match="names category 1 'one'.*as 'person'"):
        check_label_mapping(ds, {**same, "class_names": ["person", "three", "ninety"]})


def test_score_a_predictions_file(tmp_path, capsys):
    from klhuber import cli
    from klhuber.detection.evaluate import score_predictions

    _, ann = _hand_written(tmp_path)
    gt = json.loads(ann.read_text(encoding="utf-8"))
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "score": 0.9} for a in gt["annotations"]]
    predictions = tmp_path / "dt.json"
    predictions.write_text(json.dumps(perfect))
    assert score_predictions(ann, predictions)["AP"] == pytest.approx(1.0)
    assert cli.main(["detect", "score", "--gt", str(ann), "--predictions", str(predictions),
                     "--output", str(tmp_path / "scored.json")]) == 0
    assert capsys.readouterr().out.startswith("AP 100.0")
    assert json.loads((tmp_path / "scored.json").read_text())["metrics"]["AP"] == pytest.approx(1)
    predictions.write_text(json.dumps([{**perfect[0], "category_id": 7}]))
    assert cli.main(["detect", "score", "--gt", str(ann), "--predictions",
                     str(predictions)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("klhuber detect score: error:") and "category_id 7" in err
    with pytest.raises(ValueError, match="image_id 99"):
        score_predictions(ann, [{**perfect[0], "image_id": 99}])
    with pytest.raises(FileNotFoundError, match="nope.json"):
        score_predictions(ann, tmp_path / "nope.json")
