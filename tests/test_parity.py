"""The MXNet (GluonCV, GluonNLP) and PyTorch paths build the same networks.

The MXNet side runs in its own environment, so it is probed in a subprocess there.
"""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification

from bench.run.processes import python_for
from bench.run.runner import backend_available
from models.bert.torch import base_config
from models.ssd.torch_box import detect
from models.ssd.torch_net import (
    build_ssd512_resnet50,
    feature_shapes,
    generate_anchors,
    gluon_param_counts,
)

PROBE = """
import json
import mxnet as mx
from bench.schema.spec import RunSpec
from models.bert.gluon import BertGluon
from models.ssd.gluon import SsdGluon, parameter_counts

# a hybridized block keeps the graph of its first call: one network per mode
ssd = SsdGluon(RunSpec(workload="ssd", backend="mxnet", device="cpu", batch=2))
ssd.setup()
with mx.autograd.train_mode():
    train_out = ssd.net(ssd.images)
infer = SsdGluon(RunSpec(workload="ssd", backend="mxnet", device="cpu", batch=2))
infer.setup()
infer_out = infer.step()
bert = BertGluon(RunSpec(workload="bert", backend="mxnet", device="cpu", batch=2, seq_len=16))
bert.setup()
logits = bert.step()
print(json.dumps({
    "ssd_counts": parameter_counts(ssd.net),
    "ssd_train_shapes": [list(a.shape) for a in train_out],
    "ssd_infer_shapes": [list(a.shape) for a in infer_out],
    "bert_parameters": bert.details()["parameters"],
    "bert_logits_shape": list(logits.shape),
}))
"""

#: GluonCV's SSD inference post-processing, as ``SSD.hybrid_forward`` runs it after the
#: network (gluoncv/model_zoo/ssd/ssd.py), on predictions read from argv[1]; the detections go
#: to argv[2]. The decoders and NMS settings are the model's own.
DETECT_PROBE = """
import sys
import mxnet as mx
import numpy as np
from gluoncv import model_zoo

F = mx.nd
net = model_zoo.get_model("ssd_512_resnet50_v1_voc", pretrained=False, pretrained_base=False)
data = np.load(sys.argv[1])
cls_preds, box_preds, anchors = (F.array(data[k]) for k in ("cls", "box", "anchors"))
bboxes = net.bbox_decoder(box_preds, anchors)
cls_ids, scores = net.cls_decoder(F.softmax(cls_preds, axis=-1))
results = []
for i in range(net.num_classes):
    cls_id = cls_ids.slice_axis(axis=-1, begin=i, end=i + 1)
    score = scores.slice_axis(axis=-1, begin=i, end=i + 1)
    results.append(F.concat(*[cls_id, score, bboxes], dim=-1))
result = F.contrib.box_nms(
    F.concat(*results, dim=1), overlap_thresh=net.nms_thresh, topk=net.nms_topk,
    valid_thresh=0.01, id_index=0, score_index=1, coord_start=2, force_suppress=False,
)
result = result.slice_axis(axis=1, begin=0, end=net.post_nms).asnumpy()
np.savez(sys.argv[2], ids=result[..., 0], scores=result[..., 1], boxes=result[..., 2:6],
         settings=np.array([net.nms_thresh, net.nms_topk, net.post_nms]))
"""

pytestmark = pytest.mark.skipif(
    not backend_available("mxnet"), reason="the MXNet environment (.venv-mxnet) is not set up"
)


@pytest.fixture(scope="module")
def mxnet_facts():
    proc = subprocess.run(
        [str(python_for("mxnet")), "-c", PROBE], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_ssd_structure_agrees(mxnet_facts):
    net = build_ssd512_resnet50(torch.device("cpu"))
    counts = gluon_param_counts(net)
    assert mxnet_facts["ssd_counts"] == counts
    with torch.no_grad():
        cls, box, anchors = net.train()(torch.zeros(2, 3, 512, 512))
    torch_shapes = [list(cls.shape), list(box.shape), list(anchors.shape)]
    assert (
        mxnet_facts["ssd_train_shapes"]
        == torch_shapes
        == [[2, 6132, 21], [2, 6132, 4], [1, 6132, 4]]
    )
    # inference: GluonCV gives ids/scores as [N, 100, 1]; the port as [N, 100]
    assert mxnet_facts["ssd_infer_shapes"] == [[2, 100, 1], [2, 100, 1], [2, 100, 4]]


def test_bert_parameter_counts_agree(mxnet_facts):
    with torch.device("meta"):
        model = BertForSequenceClassification(base_config())
    assert mxnet_facts["bert_parameters"] == sum(p.numel() for p in model.parameters())
    assert mxnet_facts["bert_logits_shape"] == [2, 2]


def test_ssd_detections_agree_with_gluoncv(tmp_path: Path) -> None:
    """The port's detect() gives GluonCV's detections for the same predictions, at a batch
    (16 images at 512 px: 25,600 NMS box elements) where torchvision's batched_nms would have
    looped over classes: the same ids, and scores and boxes to float32 rounding."""
    gen = torch.Generator().manual_seed(0)
    cls = torch.randn(16, 6132, 21, generator=gen) * 2
    box = torch.randn(16, 6132, 4, generator=gen) * 0.5
    anchors = generate_anchors(feature_shapes(512))
    np.savez(tmp_path / "in.npz", cls=cls.numpy(), box=box.numpy(), anchors=anchors.numpy())
    proc = subprocess.run(
        [str(python_for("mxnet")), "-c", DETECT_PROBE, tmp_path / "in.npz", tmp_path / "out.npz"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    gluon = np.load(tmp_path / "out.npz")
    assert gluon["settings"].tolist() == [0.45, 400, 100]
    ids, scores, boxes = detect(cls, box, anchors)  # GluonCV does not clip to the image
    valid = ids >= 0
    assert int(valid.sum()) > 16 * 50
    np.testing.assert_array_equal(ids.numpy(), gluon["ids"].astype(np.int64))
    np.testing.assert_allclose(scores.numpy(), gluon["scores"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(boxes.numpy(), gluon["boxes"], rtol=1e-4, atol=1e-3)
