"""The three pseudo-label sources on a tiny synthetic world: their boxes agree with the ground truth."""
import json
import os

from datasets.records import load_split_file, parse_records
from pseudo_label_generation_module import caption, merge, relation, stats, template
from pseudo_label_generation_module.geometry import iou_matrix
from pseudo_label_generation_module.inputs import load_synonyms
from pseudo_label_generation_module.lexicon import Lexicon
from pseudo_label_generation_module.samples import sample_box_xyxy

# Measured on this world (seed 0, 40 train images, default noise): box agreement template 0.98, relation 0.86,
# caption 1.00; box and named class: template 0.95, relation 0.78, caption 1.00. Asserted with a margin.
MIN_BOX_AGREEMENT = {"template": 0.9, "relation": 0.75, "caption": 0.85}
MIN_CLASS_AGREEMENT = {"template": 0.85, "relation": 0.65, "caption": 0.85}


def _class_agreement(samples, gt, lexicon):
    """Share of samples whose box overlaps (IoU >= 0.5) a ground-truth object named by the expression's first
    object word (a class name or one of its synonyms)."""
    agreeing = 0
    for sample in samples:
        objects = gt[sample[0]]["objects"]
        ious = iou_matrix([sample_box_xyxy(sample, "synthetic")], [tuple(o["box"]) for o in objects])[0]
        best = int(ious.argmax())
        entities = lexicon.entities(sample[3])
        agreeing += (float(ious[best]) >= 0.5 and bool(entities)
                     and objects[best]["class"] in lexicon.classes_for(entities[0]))
    return agreeing / len(samples)


def test_pseudo_labels_on_the_synthetic_world(tmp_path):
    import demo.synthetic as synthetic
    config = synthetic.SyntheticConfig(seed=0, n_train_images=40, n_val_images=1, n_testA_images=1,
                                       n_testB_images=1, n_pretrain=0)
    paths = synthetic.generate(str(tmp_path / "data"), str(tmp_path / "split"), config)["paths"]
    out = tmp_path / "train_separate"
    common = ["--dataset", "synthetic", "--synonyms", paths["synonyms"]]
    template.main(["--detections", paths["detections"], "--attributes", paths["attributes"], "--seed", "0",
                   "--output", str(out / "1_synthetic_train_pseudo_template.pth")] + common)
    relation.main(["--scene_graphs", paths["scene_graphs"],
                   "--output", str(out / "2_synthetic_train_pseudo_relation.pth")] + common)
    caption.main(["--captions", paths["captions"], "--detections", paths["detections"],
                  "--attributes", paths["attributes"],
                  "--output", str(out / "3_synthetic_train_pseudo_caption.pth")] + common)

    with open(paths["annotations"]) as fh:
        gt = {scene["image"]: scene for scene in json.load(fh)["train"]}
    reference = {image: [tuple(o["box"]) for o in scene["objects"]] for image, scene in gt.items()}
    lexicon = Lexicon(sorted({o["class"] for s in gt.values() for o in s["objects"]}),
                      load_synonyms(paths["synonyms"]))
    for order, source in enumerate(("template", "relation", "caption"), start=1):
        samples = load_split_file(str(out / f"{order}_synthetic_train_pseudo_{source}.pth"), "synthetic")
        records, bad = parse_records(samples, "synthetic")
        assert len(records) == len(samples) > 20 and not bad
        agreement = stats.box_agreement(samples, "synthetic", reference)
        assert agreement["evaluated"] == len(samples)
        assert agreement["rate"] >= MIN_BOX_AGREEMENT[source], source
        assert _class_agreement(samples, gt, lexicon) >= MIN_CLASS_AGREEMENT[source], source

    merged = merge.main(["--dataset", "synthetic", "--folder", str(out)])
    assert merged == os.path.join(str(out), "synthetic", "synthetic_train_pseudo.pth")
    report = stats.main(["--dataset", "synthetic", str(out / "1_synthetic_train_pseudo_template.pth"),
                         str(out / "2_synthetic_train_pseudo_relation.pth"),
                         str(out / "3_synthetic_train_pseudo_caption.pth"), "--synonyms", paths["synonyms"],
                         "--detections", paths["detections"]])
    sizes = {name: s["samples"] for name, s in report["sources"].items()}
    assert len(load_split_file(merged, "synthetic")) == sum(sizes.values())
    assert report["msa_order"][0] == "template"
